//! An SMPP 3.4 SMSC simulator: smsgw's own carrier for demos and load tests (interop
//! tests use third-party peers instead).
//!
//! Data flow: an ESME binds (TX, RX or TRX; `system_id`/`password` checked when set) and
//! sends `submit_sm`. The first [`Rule`] whose prefix matches the destination decides:
//! after `latency_ms` the simulator answers `submit_sm_resp` (or `ESME_RSUBMITFAIL` with
//! probability `reject_rate`, or `ESME_RTHROTTLED` above `throttle_per_sec`), then after
//! `dlr_delay_ms` sends a `deliver_sm` receipt, `DELIVRD` with probability `success_rate`
//! and `UNDELIV` otherwise, with both the text form and the `receipted_message_id` /
//! `message_state` TLVs. A control HTTP endpoint injects MO messages (`POST /mo`) and
//! reports counters (`GET /stats`).
//!
//! Receipts are kept until a receiver acknowledges them, as real SMSCs keep them: one
//! with no receiver bound waits for the next receiver bind, and one sent on a
//! connection that closes before its `deliver_sm_resp` is sent again on the next. With
//! `ledger` set, every accepted submit and every receipt decided is written to a JSON
//! lines file: what the carrier did, for the ledger check to compare with the event log.

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::{SinkExt, StreamExt};
use rand::{rngs::StdRng, Rng, SeedableRng};
use rusmpp::pdus::{
    BindReceiverResp, BindTransceiverResp, BindTransmitterResp, DeliverSm, SubmitSmResp,
};
use rusmpp::tlvs::MessageDeliveryRequestTlvValue;
use rusmpp::tokio_codec::CommandCodec;
use rusmpp::types::{COctetString, OctetString};
use rusmpp::values::{DataCoding, EsmClass, MessageState, Npi, Ton};
use rusmpp::{Command, CommandStatus, Pdu};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_util::codec::Framed;

/// Simulator settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// SMPP listen address.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Control HTTP address (`POST /mo`, `GET /stats`).
    #[serde(default = "default_control")]
    pub control_listen: SocketAddr,
    /// Required `system_id` (any when unset).
    #[serde(default)]
    pub system_id: Option<String>,
    /// Required password (any when unset).
    #[serde(default)]
    pub password: Option<String>,
    /// RNG seed, so runs are repeatable.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Behaviour by destination prefix (digits, no `+`); first match wins, so put the
    /// catch-all (`""`) last.
    #[serde(default = "default_rules")]
    pub rules: Vec<Rule>,
    /// JSON-lines file of what the carrier accepted and reported (appended): `{"ev":
    /// "accepted", "id", "dest", "parts"}` per accepted submit (`parts`: its part number
    /// and total, 1 of 1 when whole) and `{"ev": "receipt", "id", "dest", "stat"}` per
    /// receipt decided.
    #[serde(default)]
    pub ledger: Option<std::path::PathBuf>,
}

/// Receipts kept for absent receivers, at most (the oldest are dropped beyond).
const HELD_MAX: usize = 100_000;

/// Behaviour for destinations starting with `prefix`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Destination prefix, digits only (`""` matches all).
    #[serde(default)]
    pub prefix: String,
    /// Delay before `submit_sm_resp`.
    #[serde(default)]
    pub latency_ms: u64,
    /// Delay between `submit_sm_resp` and the receipt.
    #[serde(default = "default_dlr_delay")]
    pub dlr_delay_ms: u64,
    /// Probability of `DELIVRD` (else `UNDELIV`).
    #[serde(default = "one")]
    pub success_rate: f64,
    /// Probability of refusing the submit with `ESME_RSUBMITFAIL`.
    #[serde(default)]
    pub reject_rate: f64,
    /// Submits per second accepted on one connection; above it `ESME_RTHROTTLED` (0: no limit).
    #[serde(default)]
    pub throttle_per_sec: u32,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 2775))
}
fn default_control() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 2776))
}
fn default_seed() -> u64 {
    42
}
fn default_dlr_delay() -> u64 {
    500
}
fn one() -> f64 {
    1.0
}
fn default_rules() -> Vec<Rule> {
    vec![Rule::default()]
}

impl Default for Rule {
    fn default() -> Self {
        Rule {
            prefix: String::new(),
            latency_ms: 0,
            dlr_delay_ms: default_dlr_delay(),
            success_rate: 1.0,
            reject_rate: 0.0,
            throttle_per_sec: 0,
        }
    }
}

impl Config {
    /// Defaults on the given addresses.
    pub fn new(listen: SocketAddr, control_listen: SocketAddr) -> Self {
        Config {
            listen,
            control_listen,
            system_id: None,
            password: None,
            seed: default_seed(),
            rules: default_rules(),
            ledger: None,
        }
    }

    fn rule(&self, destination: &str) -> Rule {
        let d = destination.trim_start_matches('+');
        self.rules
            .iter()
            .find(|r| d.starts_with(&r.prefix))
            .cloned()
            .unwrap_or_default()
    }
}

/// Counters, as `GET /stats` shows them.
#[derive(Debug, Default, Serialize, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Binds accepted.
    pub binds: u64,
    /// Binds refused.
    pub bind_failures: u64,
    /// `submit_sm` received.
    pub submits: u64,
    /// Submits refused (reject or throttle).
    pub refused: u64,
    /// Receipts sent (a receipt sent again after a lost connection counts again).
    pub receipts: u64,
    /// Receipts waiting for a receiver bind now.
    pub held_receipts: u64,
    /// MO messages sent.
    pub mo: u64,
}

#[derive(Debug, Default)]
struct Counters {
    binds: AtomicU64,
    bind_failures: AtomicU64,
    submits: AtomicU64,
    refused: AtomicU64,
    receipts: AtomicU64,
    mo: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> Stats {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            binds: g(&self.binds),
            bind_failures: g(&self.bind_failures),
            submits: g(&self.submits),
            refused: g(&self.refused),
            receipts: g(&self.receipts),
            held_receipts: 0,
            mo: g(&self.mo),
        }
    }
}

struct Shared {
    config: Config,
    counters: Counters,
    next_id: AtomicU64,
    next_seq: AtomicU64,
    rng: Mutex<StdRng>,
    /// Connections bound to receive.
    receivers: Mutex<Vec<Receiver>>,
    /// Receipts no receiver has acknowledged, waiting for the next receiver bind.
    held: Mutex<std::collections::VecDeque<DeliverSm>>,
    /// The ledger file, when configured.
    ledger: Option<Mutex<std::fs::File>>,
    /// `submit_sm` that were not refused, by destination address (first parts only).
    taken: Mutex<std::collections::HashMap<String, u32>>,
    /// Bumped to cut every open connection at once (a link failure).
    cut: watch::Sender<u64>,
    /// Submits per second per connection while a throttling storm lasts (0: the rules').
    storm_per_sec: std::sync::atomic::AtomicU32,
}

impl Shared {
    fn chance(&self, p: f64) -> bool {
        p > 0.0
            && (p >= 1.0
                || self
                    .rng
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .random_bool(p.clamp(0.0, 1.0)))
    }
    fn seq(&self) -> u32 {
        (self.next_seq.fetch_add(1, Ordering::Relaxed) % 0x7FFF_FFFF) as u32 + 1
    }
}

/// A connection bound to receive: where receipts and MO go, whether it is still open,
/// and the receipts it has not acknowledged yet (by sequence number), under one lock so
/// a receipt is never left on a connection that just ended.
#[derive(Clone)]
struct Receiver {
    tx: mpsc::UnboundedSender<Command>,
    unacked: Arc<Mutex<Unacked>>,
}

#[derive(Default)]
struct Unacked {
    open: bool,
    by_seq: std::collections::HashMap<u32, DeliverSm>,
}

impl Receiver {
    fn new(tx: mpsc::UnboundedSender<Command>) -> Self {
        Receiver {
            tx,
            unacked: Arc::new(Mutex::new(Unacked {
                open: true,
                by_seq: Default::default(),
            })),
        }
    }

    fn open(&self) -> bool {
        locked(&self.unacked).open && !self.tx.is_closed()
    }

    /// Sends `d` as `seq` and remembers it until acknowledged; `false` if the connection
    /// is gone.
    fn send(&self, seq: u32, d: &DeliverSm) -> bool {
        let mut u = locked(&self.unacked);
        if !u.open
            || self
                .tx
                .send(Command::new(CommandStatus::EsmeRok, seq, d.clone()))
                .is_err()
        {
            return false;
        }
        u.by_seq.insert(seq, d.clone());
        true
    }
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// Appends one line to the ledger, when there is one.
    fn note(&self, line: serde_json::Value) {
        if let Some(f) = &self.ledger {
            use std::io::Write;
            let _ = writeln!(locked(f), "{line}");
        }
    }

    /// Sends a receipt to `preferred` when it is still open, else to any open receiver,
    /// else keeps it for the next receiver bind. It stays unacknowledged on the
    /// connection it went to until that connection's `deliver_sm_resp`.
    fn deliver_receipt(&self, preferred: Option<&Receiver>, d: DeliverSm) {
        let to = preferred
            .filter(|r| r.open())
            .cloned()
            .or_else(|| locked(&self.receivers).iter().find(|r| r.open()).cloned());
        if let Some(r) = to {
            if r.send(self.seq(), &d) {
                self.counters.receipts.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        self.hold(d);
    }

    fn hold(&self, d: DeliverSm) {
        let mut held = locked(&self.held);
        if held.len() >= HELD_MAX {
            held.pop_front();
        }
        held.push_back(d);
    }

    /// A receiver connection ended: it leaves the receivers, and what it did not
    /// acknowledge is kept for the next one.
    fn receiver_gone(&self, me: &Receiver) {
        locked(&self.receivers).retain(|r| !r.tx.same_channel(&me.tx));
        let mut unacked: Vec<(u32, DeliverSm)> = {
            let mut u = locked(&me.unacked);
            u.open = false;
            u.by_seq.drain().collect()
        };
        unacked.sort_by_key(|(seq, _)| *seq);
        for (_, d) in unacked {
            self.hold(d);
        }
    }

    /// A receiver bound: it gets every receipt kept for an absent receiver.
    fn receiver_bound(&self, me: &Receiver) {
        locked(&self.receivers).push(me.clone());
        let held: Vec<DeliverSm> = locked(&self.held).drain(..).collect();
        for d in held {
            self.deliver_receipt(Some(me), d);
        }
    }
}

/// A running simulator.
pub struct Simulator {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// SMPP address actually bound.
    pub smpp_addr: SocketAddr,
    /// Control address actually bound.
    pub control_addr: SocketAddr,
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator")
            .field("smpp_addr", &self.smpp_addr)
            .finish()
    }
}

/// An MO message to inject.
#[derive(Debug, Deserialize, Serialize)]
pub struct Mo {
    /// Handset number (digits, optional `+`).
    pub from: String,
    /// Our number or short code.
    pub to: String,
    /// Text (sent as GSM-7 when it fits, else UCS-2).
    pub body: String,
}

impl Simulator {
    /// Binds both listeners and starts serving.
    pub async fn start(config: Config) -> anyhow::Result<Self> {
        let smpp = TcpListener::bind(config.listen).await?;
        let control = TcpListener::bind(config.control_listen).await?;
        let (smpp_addr, control_addr) = (smpp.local_addr()?, control.local_addr()?);
        let ledger = match &config.ledger {
            Some(path) => Some(Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            )),
            None => None,
        };
        let shared = Arc::new(Shared {
            ledger,
            held: Mutex::new(std::collections::VecDeque::new()),
            rng: Mutex::new(StdRng::seed_from_u64(config.seed)),
            config,
            counters: Counters::default(),
            next_id: AtomicU64::new(0x1000),
            next_seq: AtomicU64::new(1),
            receivers: Mutex::new(Vec::new()),
            taken: Mutex::new(std::collections::HashMap::new()),
            cut: watch::channel(0).0,
            storm_per_sec: std::sync::atomic::AtomicU32::new(0),
        });
        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        {
            let (shared, stop_rx) = (shared.clone(), stop_rx.clone());
            tasks.push(tokio::spawn(async move {
                let mut stop_wait = stop_rx.clone();
                loop {
                    tokio::select! {
                        _ = stopped(&mut stop_wait) => break,
                        acc = smpp.accept() => if let Ok((sock, _)) = acc {
                            let _ = sock.set_nodelay(true);
                            tokio::spawn(serve(shared.clone(), sock, stop_rx.clone()));
                        }
                    }
                }
            }));
        }
        {
            let app = Router::new()
                .route("/mo", post(inject_mo))
                .route(
                    "/stats",
                    get(|State(s): State<Arc<Shared>>| async move { Json(s.counters.snapshot()) }),
                )
                .with_state(shared.clone());
            let mut stop_rx = stop_rx.clone();
            tasks.push(tokio::spawn(async move {
                let _ = axum::serve(control, app)
                    .with_graceful_shutdown(async move {
                        let _ = stop_rx.wait_for(|s| *s).await;
                    })
                    .await;
            }));
        }
        tracing::info!(%smpp_addr, %control_addr, "carrier simulator listening");
        Ok(Simulator {
            shared,
            stop,
            tasks,
            smpp_addr,
            control_addr,
        })
    }

    /// Current counters.
    pub fn stats(&self) -> Stats {
        let mut s = self.shared.counters.snapshot();
        s.held_receipts = locked(&self.shared.held).len() as u64;
        s
    }

    /// How many messages were taken (not refused) per destination address, counting
    /// only the first part of a long message: more than one means the recipient got
    /// the message more than once.
    pub fn taken_by_destination(&self) -> std::collections::HashMap<String, u32> {
        self.shared
            .taken
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Sends an MO to every connection bound to receive; returns how many got it.
    pub fn send_mo(&self, mo: &Mo) -> usize {
        send_mo(&self.shared, mo)
    }

    /// Drops every open connection at once, without unbind, whatever is outstanding on
    /// it, as when a carrier's link fails: submits already taken stay taken (their
    /// `submit_sm_resp` is lost); receipts not yet acknowledged wait for the next bind.
    pub fn cut_connections(&self) {
        self.shared.cut.send_modify(|n| *n += 1);
    }

    /// Starts (`Some(n)`: at most `n` submits per second per connection, the rest
    /// refused with `ESME_RTHROTTLED`) or ends (`None`) a throttling storm.
    pub fn throttle_storm(&self, per_sec: Option<u32>) {
        self.shared
            .storm_per_sec
            .store(per_sec.unwrap_or(0), Ordering::Relaxed);
    }

    /// Stops listening and closes every connection.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

async fn inject_mo(State(s): State<Arc<Shared>>, Json(mo): Json<Mo>) -> Json<serde_json::Value> {
    let n = send_mo(&s, &mo);
    Json(serde_json::json!({"delivered_to_sessions": n}))
}

fn cstr<const MIN: usize, const MAX: usize>(s: &str) -> COctetString<MIN, MAX> {
    COctetString::from_string(
        s.chars()
            .filter(|c| c.is_ascii() && *c != '\0')
            .take(MAX - 1)
            .collect(),
    )
    .unwrap_or_else(|_| COctetString::empty())
}

fn send_mo(s: &Shared, mo: &Mo) -> usize {
    // GSM-7 when it fits (carried unpacked, data_coding 0), else UCS-2; a long text goes
    // out as concatenated parts with an 8-bit-reference UDH, as handsets send them.
    let encoding = smsgw_gsm::analyse(&mo.body).encoding;
    let reference = (s.next_seq.load(Ordering::Relaxed) & 0xFF) as u16;
    let parts = smsgw_gsm::parts(&mo.body, encoding, smsgw_gsm::LongMode::Udh8, reference)
        .unwrap_or_default();
    let pdus: Vec<DeliverSm> = parts
        .iter()
        .map(|p| {
            DeliverSm::builder()
                .source_addr_ton(Ton::International)
                .source_addr_npi(Npi::Isdn)
                .source_addr(cstr(mo.from.trim_start_matches('+')))
                .destination_addr(cstr(&mo.to))
                .esm_class(EsmClass::from(if p.udhi { 0x40 } else { 0x00 }))
                .data_coding(DataCoding::from(encoding.data_coding()))
                .short_message(
                    OctetString::from_slice(&p.octets).unwrap_or_else(|_| OctetString::empty()),
                )
                .build()
        })
        .collect();
    let mut rx = s.receivers.lock().unwrap_or_else(|e| e.into_inner());
    rx.retain(|r| r.open());
    let mut n = 0;
    for r in rx.iter() {
        let sent = pdus.iter().all(|d| {
            r.tx.send(Command::new(CommandStatus::EsmeRok, s.seq(), d.clone()))
                .is_ok()
        });
        if sent {
            n += 1;
        }
    }
    s.counters.mo.fetch_add(n as u64, Ordering::Relaxed);
    n
}

fn yymmddhhmm() -> String {
    // A fixed date keeps receipts deterministic; the gateway does not use it.
    "2611261200".to_string()
}

async fn serve(shared: Arc<Shared>, sock: TcpStream, mut stop: watch::Receiver<bool>) {
    let (mut sink, mut stream) =
        Framed::new(sock, CommandCodec::new().with_max_length(65_536)).split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Command>();
    let writer = tokio::spawn(async move {
        while let Some(cmd) = rx.recv().await {
            if sink.send(cmd).await.is_err() {
                break;
            }
        }
    });
    let mut window_start = Instant::now();
    let mut in_window = 0u32;
    // A transmitter session gets no deliver_sm: its receipts go to a receiver bind.
    let mut receives = false;
    let me = Receiver::new(tx.clone());
    let mut cut = shared.cut.subscribe();
    cut.mark_unchanged();
    loop {
        let cmd = tokio::select! {
            _ = stopped(&mut stop) => break,
            _ = cut.changed() => {
                tracing::info!("cutting the connection");
                writer.abort();
                if receives {
                    shared.receiver_gone(&me);
                }
                return;
            }
            c = stream.next() => match c {
                Some(Ok(c)) => c,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "undecodable PDU; generic_nack");
                    let _ = tx.send(Command::new(CommandStatus::EsmeRinvcmdlen, 0, Pdu::GenericNack));
                    continue;
                }
                None => break,
            },
        };
        let seq = cmd.sequence_number();
        let reply = |status: CommandStatus, pdu: Pdu| {
            let _ = tx.send(Command::new(status, seq, pdu));
        };
        match cmd.pdu() {
            Some(
                bind @ (Pdu::BindTransceiver(_) | Pdu::BindReceiver(_) | Pdu::BindTransmitter(_)),
            ) => {
                let (id, pw, rx_bind, resp): (&str, &str, bool, Pdu) = match bind {
                    Pdu::BindTransceiver(b) => (
                        b.system_id.as_str(),
                        b.password.as_str(),
                        true,
                        BindTransceiverResp::builder()
                            .system_id(cstr("smsgw-sim"))
                            .build()
                            .into(),
                    ),
                    Pdu::BindReceiver(b) => (
                        b.system_id.as_str(),
                        b.password.as_str(),
                        true,
                        BindReceiverResp::builder()
                            .system_id(cstr("smsgw-sim"))
                            .build()
                            .into(),
                    ),
                    Pdu::BindTransmitter(b) => (
                        b.system_id.as_str(),
                        b.password.as_str(),
                        false,
                        BindTransmitterResp::builder()
                            .system_id(cstr("smsgw-sim"))
                            .build()
                            .into(),
                    ),
                    _ => unreachable!("matched above"),
                };
                let ok = bind_ok(&shared, id, pw);
                reply(bind_status(ok), resp);
                receives = ok && rx_bind;
                if receives {
                    // Receivers get receipts (those kept for an absent receiver first)
                    // and MO.
                    shared.receiver_bound(&me);
                }
            }
            Some(Pdu::SubmitSm(sm)) => {
                shared.counters.submits.fetch_add(1, Ordering::Relaxed);
                let dest = sm.destination_addr.as_str().to_string();
                let mut rule = shared.config.rule(&dest);
                let storm = shared.storm_per_sec.load(Ordering::Relaxed);
                if storm > 0 {
                    rule.throttle_per_sec = storm;
                }
                if rule.throttle_per_sec > 0 {
                    if window_start.elapsed() >= Duration::from_secs(1) {
                        window_start = Instant::now();
                        in_window = 0;
                    }
                    in_window += 1;
                    if in_window > rule.throttle_per_sec {
                        shared.counters.refused.fetch_add(1, Ordering::Relaxed);
                        reply(
                            CommandStatus::EsmeRthrottled,
                            SubmitSmResp::builder()
                                .message_id(COctetString::empty())
                                .build()
                                .into(),
                        );
                        continue;
                    }
                }
                let rejected = shared.chance(rule.reject_rate);
                if !rejected && !is_later_part(sm) {
                    *shared
                        .taken
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .entry(dest.clone())
                        .or_default() += 1;
                }
                let delivered = shared.chance(rule.success_rate);
                let wants_receipt = u8::from(sm.registered_delivery) & 0x03 != 0;
                let text: String = String::from_utf8_lossy(sm.short_message().as_ref())
                    .chars()
                    .take(20)
                    .collect();
                let parts = concat_of(sm);
                let (shared, tx) = (shared.clone(), tx.clone());
                let preferred = receives.then(|| me.clone());
                tokio::spawn(async move {
                    if rule.latency_ms > 0 {
                        tokio::time::sleep(Duration::from_millis(rule.latency_ms)).await;
                    }
                    if rejected {
                        shared.counters.refused.fetch_add(1, Ordering::Relaxed);
                        let _ = tx.send(Command::new(
                            CommandStatus::EsmeRsubmitfail,
                            seq,
                            SubmitSmResp::builder()
                                .message_id(COctetString::empty())
                                .build(),
                        ));
                        return;
                    }
                    let id = format!("{:X}", shared.next_id.fetch_add(1, Ordering::Relaxed));
                    shared.note(serde_json::json!({"ev": "accepted", "id": id, "dest": dest, "parts": [parts.0, parts.1]}));
                    let _ = tx.send(Command::new(
                        CommandStatus::EsmeRok,
                        seq,
                        SubmitSmResp::builder().message_id(cstr(&id)).build(),
                    ));
                    if !wants_receipt {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(rule.dlr_delay_ms)).await;
                    let (stat, state) = if delivered {
                        ("DELIVRD", MessageState::Delivered)
                    } else {
                        ("UNDELIV", MessageState::Undeliverable)
                    };
                    let err = if delivered { "000" } else { "001" };
                    let receipt = smsgw_smpp::format_receipt_text(
                        &id,
                        stat,
                        err,
                        &yymmddhhmm(),
                        &yymmddhhmm(),
                        &text,
                    );
                    let mut d = DeliverSm::builder()
                        .source_addr(cstr(&dest))
                        .destination_addr(cstr(""))
                        .esm_class(EsmClass::from(0x04))
                        .short_message(
                            OctetString::from_slice(receipt.as_bytes())
                                .unwrap_or_else(|_| OctetString::empty()),
                        )
                        .build();
                    d.push_tlv(MessageDeliveryRequestTlvValue::ReceiptedMessageId(cstr(
                        &id,
                    )));
                    d.push_tlv(MessageDeliveryRequestTlvValue::MessageState(state));
                    shared.note(
                        serde_json::json!({"ev": "receipt", "id": id, "dest": dest, "stat": stat}),
                    );
                    shared.deliver_receipt(preferred.as_ref(), d);
                });
            }
            Some(Pdu::EnquireLink) => reply(CommandStatus::EsmeRok, Pdu::EnquireLinkResp),
            Some(Pdu::Unbind) => {
                reply(CommandStatus::EsmeRok, Pdu::UnbindResp);
                break;
            }
            Some(Pdu::DeliverSmResp(_)) => {
                locked(&me.unacked).by_seq.remove(&seq);
            }
            Some(Pdu::EnquireLinkResp) | Some(Pdu::GenericNack) => {}
            _ => reply(CommandStatus::EsmeRinvcmdid, Pdu::GenericNack),
        }
    }
    if receives {
        shared.receiver_gone(&me);
    }
    drop(tx);
    // Give queued responses a moment to flush before the socket closes.
    let _ = tokio::time::timeout(Duration::from_millis(200), writer).await;
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

fn bind_ok(s: &Shared, system_id: &str, password: &str) -> bool {
    let ok = s
        .config
        .system_id
        .as_deref()
        .is_none_or(|id| id == system_id)
        && s.config.password.as_deref().is_none_or(|p| p == password);
    if ok {
        s.counters.binds.fetch_add(1, Ordering::Relaxed);
    } else {
        s.counters.bind_failures.fetch_add(1, Ordering::Relaxed);
    }
    ok
}

fn bind_status(ok: bool) -> CommandStatus {
    if ok {
        CommandStatus::EsmeRok
    } else {
        CommandStatus::EsmeRbindfail
    }
}

/// (part number, total) of a UDH-concatenated submit; (1, 1) for a whole message.
fn concat_of(sm: &rusmpp::pdus::SubmitSm) -> (u8, u8) {
    if u8::from(sm.esm_class) & 0x40 == 0 {
        return (1, 1);
    }
    match sm.short_message().as_ref() {
        [_, 0x00, 0x03, _, total, seq, ..] => (*seq, *total),
        [_, 0x08, 0x04, _, _, total, seq, ..] => (*seq, *total),
        _ => (1, 1),
    }
}

/// True for the second and later parts of a UDH-concatenated message.
fn is_later_part(sm: &rusmpp::pdus::SubmitSm) -> bool {
    if u8::from(sm.esm_class) & 0x40 == 0 {
        return false;
    }
    let b = sm.short_message().as_ref();
    match b {
        [_, 0x00, 0x03, _, _, seq, ..] => *seq > 1,
        [_, 0x08, 0x04, _, _, _, seq, ..] => *seq > 1,
        _ => false,
    }
}
