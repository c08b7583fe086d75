//! One ESME connection: bind, then submits in, responses out, until unbind, silence,
//! garbage or shutdown ends it.
//!
//! The loop reads a frame only while fewer than `window` submits await the broker, so a
//! flood pushes back through TCP instead of growing memory. A submit is answered only
//! once its request is on the ingest topic (`ESME_RSYSERR` if the broker refuses it,
//! and the ESME resends); decisions about a PDU (`submit::read`, admission) are pure
//! functions, and this file only carries them out.

use crate::accounts::{Account, Refusal};
use crate::frame::{Frame, FrameError, ServerCodec};
use crate::reassembly::{Added, Pending};
use crate::receipts::{Outbound, Receiver};
use crate::submit::{self, Envelope, Submitted};
use crate::Server;
use futures::stream::FuturesUnordered;
use futures::{SinkExt, StreamExt};
use rusmpp::pdus::{
    BindReceiverResp, BindTransceiverResp, BindTransmitterResp, SubmitSm, SubmitSmResp,
};
use rusmpp::types::COctetString;
use rusmpp::values::InterfaceVersion;
use rusmpp::{Command, CommandStatus, Pdu};
use smsgw_codec::SubmitRequest;
use smsgw_kafka::{now_ms, OutRecord};
use smsgw_runtime::Shutdown;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::Framed;

/// What a bind allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Transmitter,
    Receiver,
    Transceiver,
}

impl Kind {
    fn submits(self) -> bool {
        self != Kind::Receiver
    }

    fn receives(self) -> bool {
        self != Kind::Transmitter
    }
}

/// How long a closing session waits for the broker (its answers, its dead letters).
const CLOSE_WAIT: Duration = Duration::from_secs(10);

/// A submit waiting for the broker: resolves to the answer for the ESME.
type Answer = Pin<Box<dyn Future<Output = Command> + Send>>;

/// Why the session ended, for the log.
#[derive(Debug)]
enum End {
    Peer(&'static str),
    Server(&'static str),
}

impl End {
    fn why(&self) -> &'static str {
        match self {
            End::Peer(w) | End::Server(w) => w,
        }
    }
}

struct Session {
    server: Arc<Server>,
    peer: SocketAddr,
    io: Framed<TcpStream, ServerCodec>,
    bound: Option<(Account, Kind)>,
    answers: FuturesUnordered<Answer>,
    parts: crate::reassembly::Reassembler,
    connected: Instant,
    last_heard: Instant,
    /// Our `enquire_link` awaiting its response: its sequence number and when it went.
    probe: Option<(u32, Instant)>,
    next_sequence: u32,
    garbage: u32,
    /// This session's id, once it takes receipts.
    receiver: Option<u64>,
    /// Receipts to send, once bound as a receiver or transceiver.
    outbound: Option<mpsc::Receiver<Outbound>>,
    /// Receipts sent and not yet answered, by sequence number.
    awaiting: HashMap<u32, oneshot::Sender<CommandStatus>>,
}

/// Serves one connection until it ends.
pub async fn serve(server: Arc<Server>, stream: TcpStream, peer: SocketAddr, stop: Shutdown) {
    let _ = stream.set_nodelay(true);
    let codec = ServerCodec::new(server.config.max_pdu_bytes);
    let parts = crate::reassembly::Reassembler::new(
        server.config.max_partial_messages,
        server.config.reassembly_timeout_ms as i64,
    );
    let now = Instant::now();
    let mut s = Session {
        server,
        peer,
        io: Framed::new(stream, codec),
        bound: None,
        answers: FuturesUnordered::new(),
        parts,
        connected: now,
        last_heard: now,
        probe: None,
        next_sequence: 1,
        garbage: 0,
        receiver: None,
        outbound: None,
        awaiting: HashMap::new(),
    };
    let end = s.run(stop).await;
    s.close(&end).await;
}

impl Session {
    async fn run(&mut self, stop: Shutdown) -> End {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stop = stop.wait();
        tokio::pin!(stop);
        let window = self.server.config.window;
        let receipt_window = self.server.config.receipt_window;
        loop {
            // In this order: a session that floods submits still gets its receipts
            // and its timers.
            tokio::select! {
                biased;
                _ = &mut stop => return End::Server("shutdown"),
                Some(answer) = self.answers.next(), if !self.answers.is_empty() => {
                    if self.write(answer).await.is_err() {
                        return End::Peer("write failed");
                    }
                }
                Some(o) = next_outbound(&mut self.outbound), if self.awaiting.len() < receipt_window => {
                    let seq = self.sequence();
                    self.awaiting.insert(seq, o.reply);
                    if self.write(Command::new(CommandStatus::EsmeRok, seq, o.pdu)).await.is_err() {
                        return End::Peer("write failed");
                    }
                }
                _ = tick.tick() => {
                    if let Some(end) = self.on_tick().await {
                        return end;
                    }
                }
                frame = self.io.next(), if self.answers.len() < window => {
                    let frame = match frame {
                        None => return End::Peer("closed"),
                        Some(Err(FrameError::Io(_))) => return End::Peer("read failed"),
                        Some(Err(FrameError::Length { sequence, .. })) => {
                            self.server.metrics.garbage.inc();
                            let _ = self.write(nack(CommandStatus::EsmeRinvcmdlen, sequence)).await;
                            return End::Peer("impossible command_length");
                        }
                        Some(Ok(f)) => f,
                    };
                    self.last_heard = Instant::now();
                    if let Some(end) = self.on_frame(frame).await {
                        return end;
                    }
                }
            }
        }
    }

    /// Answers what is still awaited, gives up incomplete messages, releases the bind.
    async fn close(&mut self, end: &End) {
        // What is in flight is answered, for as long as the broker takes to store it,
        // up to CLOSE_WAIT (a broker that is down would hold the shutdown for ever; an
        // ESME left without an answer resends, as after a crash).
        let answered = tokio::time::timeout(CLOSE_WAIT, async {
            while let Some(answer) = self.answers.next().await {
                let _ = self.write(answer).await;
            }
        })
        .await;
        if answered.is_err() {
            tracing::warn!(peer = %self.peer, unanswered = self.answers.len(), "session closed with submits unanswered");
        }
        if matches!(end, End::Server(_)) && self.bound.is_some() {
            let seq = self.sequence();
            let _ = self
                .write(Command::new(CommandStatus::EsmeRok, seq, Pdu::Unbind))
                .await;
        }
        let incomplete = self.parts.drain();
        self.give_up(incomplete).await;
        if let Some((account, _)) = self.bound.take() {
            if let Some(id) = self.receiver.take() {
                self.server.remove_receiver(&account.system_id, id);
            }
            self.server.unbind(&account.system_id);
        }
        // Receipts sent here and not answered: their senders see the session gone.
        self.awaiting.clear();
        self.outbound = None;
        let _ = self.io.close().await;
        tracing::info!(peer = %self.peer, end = end.why(), "SMPP session ended");
    }

    fn sequence(&mut self) -> u32 {
        let s = self.next_sequence;
        self.next_sequence = if s >= 0x7FFF_FFFF { 1 } else { s + 1 };
        s
    }

    async fn write(&mut self, cmd: Command) -> Result<(), ()> {
        let limit = Duration::from_millis(self.server.config.response_timeout_ms);
        match tokio::time::timeout(limit, self.io.send(cmd)).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(()),
        }
    }

    async fn on_tick(&mut self) -> Option<End> {
        let cfg = &self.server.config;
        let now = Instant::now();
        if self.bound.is_none()
            && now.duration_since(self.connected) >= Duration::from_millis(cfg.bind_timeout_ms)
        {
            return Some(End::Server("no bind in time"));
        }
        if now.duration_since(self.last_heard) >= Duration::from_millis(cfg.idle_timeout_ms) {
            return Some(End::Server("idle"));
        }
        if let Some((_, sent)) = self.probe {
            if now.duration_since(sent) >= Duration::from_millis(cfg.response_timeout_ms) {
                return Some(End::Peer("enquire_link unanswered"));
            }
        } else if self.bound.is_some()
            && now.duration_since(self.last_heard) >= Duration::from_millis(cfg.enquire_link_ms)
        {
            let seq = self.sequence();
            self.probe = Some((seq, now));
            if self
                .write(Command::new(CommandStatus::EsmeRok, seq, Pdu::EnquireLink))
                .await
                .is_err()
            {
                return Some(End::Peer("write failed"));
            }
        }
        let late = self.parts.expire(now_ms());
        self.give_up(late).await;
        None
    }

    async fn on_frame(&mut self, frame: Frame) -> Option<End> {
        let cmd = match frame {
            Frame::Command(c) => *c,
            Frame::Garbage { sequence, status } => {
                self.server.metrics.garbage.inc();
                self.garbage += 1;
                if self.write(nack(status, sequence)).await.is_err() {
                    return Some(End::Peer("write failed"));
                }
                return (self.garbage >= self.server.config.max_garbage_pdus)
                    .then_some(End::Server("too many garbage PDUs"));
            }
        };
        let seq = cmd.sequence_number();
        let reply = match cmd.pdu() {
            Some(Pdu::BindTransmitter(b)) => {
                return self
                    .bind(
                        seq,
                        Kind::Transmitter,
                        b.system_id.as_str(),
                        b.password.as_str(),
                    )
                    .await
            }
            Some(Pdu::BindReceiver(b)) => {
                return self
                    .bind(
                        seq,
                        Kind::Receiver,
                        b.system_id.as_str(),
                        b.password.as_str(),
                    )
                    .await
            }
            Some(Pdu::BindTransceiver(b)) => {
                return self
                    .bind(
                        seq,
                        Kind::Transceiver,
                        b.system_id.as_str(),
                        b.password.as_str(),
                    )
                    .await
            }
            Some(Pdu::EnquireLink) => {
                Command::new(CommandStatus::EsmeRok, seq, Pdu::EnquireLinkResp)
            }
            Some(Pdu::EnquireLinkResp) => {
                if self.probe.is_some_and(|(s, _)| s == seq) {
                    self.probe = None;
                }
                return None;
            }
            Some(Pdu::Unbind) => {
                let _ = self
                    .write(Command::new(CommandStatus::EsmeRok, seq, Pdu::UnbindResp))
                    .await;
                return Some(End::Peer("unbind"));
            }
            Some(Pdu::UnbindResp) => return Some(End::Peer("unbind_resp")),
            Some(Pdu::GenericNack) | Some(Pdu::DeliverSmResp(_)) => {
                if let Some(reply) = self.awaiting.remove(&seq) {
                    let _ = reply.send(cmd.status());
                }
                return None;
            }
            Some(Pdu::SubmitSm(sm)) => match &self.bound {
                Some((_, kind)) if kind.submits() => {
                    let sm = sm.clone();
                    return self.submit(seq, sm).await;
                }
                _ => submit_resp(CommandStatus::EsmeRinvbndsts, seq, ""),
            },
            Some(Pdu::QuerySm(q)) => match &self.bound {
                Some((account, _)) => query(&self.server, account, seq, q.message_id.as_str()),
                None => Command::new(CommandStatus::EsmeRinvbndsts, seq, Pdu::GenericNack),
            },
            Some(Pdu::CancelSm(c)) => match &self.bound {
                Some((account, kind)) if kind.submits() => {
                    let id = c.message_id.as_str().to_string();
                    self.answers.push(Box::pin(cancel(
                        self.server.clone(),
                        account.clone(),
                        seq,
                        id,
                    )));
                    return None;
                }
                _ => Command::new(CommandStatus::EsmeRinvbndsts, seq, Pdu::CancelSmResp),
            },
            _ => nack(CommandStatus::EsmeRinvcmdid, seq),
        };
        self.write(reply)
            .await
            .err()
            .map(|_| End::Peer("write failed"))
    }

    async fn bind(&mut self, seq: u32, kind: Kind, system_id: &str, password: &str) -> Option<End> {
        let resp = |status: CommandStatus, id: &str| -> Command {
            let id = COctetString::from_string(id.to_string()).unwrap_or_default();
            let v = Some(InterfaceVersion::Smpp3_4);
            let pdu: Pdu = match kind {
                Kind::Transmitter => BindTransmitterResp::builder()
                    .system_id(id)
                    .sc_interface_version(v)
                    .build()
                    .into(),
                Kind::Receiver => BindReceiverResp::builder()
                    .system_id(id)
                    .sc_interface_version(v)
                    .build()
                    .into(),
                Kind::Transceiver => BindTransceiverResp::builder()
                    .system_id(id)
                    .sc_interface_version(v)
                    .build()
                    .into(),
            };
            Command::new(status, seq, pdu)
        };
        let our_id = self.server.config.system_id.clone();
        if self.bound.is_some() {
            self.server
                .metrics
                .binds
                .with_label_values(&["already_bound"])
                .inc();
            let r = resp(CommandStatus::EsmeRalybnd, &our_id);
            return self.write(r).await.err().map(|_| End::Peer("write failed"));
        }
        let verdict = self
            .server
            .authenticate(system_id.to_string(), password.to_string(), self.peer.ip())
            .await;
        let refused = match verdict {
            Err(Refusal::Credentials) => Some(("credentials", CommandStatus::EsmeRinvpaswd)),
            Err(Refusal::Address) => Some(("address", CommandStatus::EsmeRbindfail)),
            Ok(account) => {
                if self.server.try_bind(&account) {
                    self.server.metrics.binds.with_label_values(&["ok"]).inc();
                    tracing::info!(peer = %self.peer, system_id = %account.system_id, kind = ?kind, "ESME bound");
                    if kind.receives() {
                        let id = self.server.session_id();
                        let (tx, rx) = mpsc::channel(self.server.config.receipt_window);
                        self.server
                            .add_receiver(&account, Receiver { session: id, tx });
                        self.receiver = Some(id);
                        self.outbound = Some(rx);
                    }
                    self.bound = Some((account, kind));
                    None
                } else {
                    Some(("max_binds", CommandStatus::EsmeRbindfail))
                }
            }
        };
        match refused {
            None => {
                let r = resp(CommandStatus::EsmeRok, &our_id);
                self.write(r).await.err().map(|_| End::Peer("write failed"))
            }
            Some((why, status)) => {
                self.server.metrics.binds.with_label_values(&[why]).inc();
                tracing::warn!(peer = %self.peer, reason = why, "bind refused");
                let _ = self.write(resp(status, &our_id)).await;
                Some(End::Server("bind refused"))
            }
        }
    }

    async fn submit(&mut self, seq: u32, sm: SubmitSm) -> Option<End> {
        let (account, _) = self.bound.clone()?;
        let metrics = self.server.metrics.clone();
        if !self.server.take_token(&account) {
            metrics.submits.with_label_values(&["throttled"]).inc();
            let r = submit_resp(CommandStatus::EsmeRthrottled, seq, "");
            return self.write(r).await.err().map(|_| End::Peer("write failed"));
        }
        let now = now_ms();
        let how = submit::Reading {
            national_default: self.server.country.is_some(),
            ia5_is_gsm7: account.ia5_is_gsm7,
        };
        let whole = match submit::read(&sm, how, now) {
            Err(r) => Err(r),
            Ok(Submitted::Whole(env, body)) => Ok((env, body, uuid::Uuid::new_v4().to_string())),
            Ok(Submitted::Part(env, c, octets)) => {
                match self
                    .parts
                    .add(env, c, octets, now, || uuid::Uuid::new_v4().to_string())
                {
                    Added::Waiting(id) => {
                        metrics.submits.with_label_values(&["part"]).inc();
                        let r = submit_resp(CommandStatus::EsmeRok, seq, &id);
                        return self.write(r).await.err().map(|_| End::Peer("write failed"));
                    }
                    Added::Full => {
                        metrics.submits.with_label_values(&["refused"]).inc();
                        let r = submit_resp(CommandStatus::EsmeRmsgqful, seq, "");
                        return self.write(r).await.err().map(|_| End::Peer("write failed"));
                    }
                    Added::Complete(p, octets) => {
                        submit::decode_text(&octets, p.envelope.data_coding)
                            .map(|body| (p.envelope, body, p.message_id))
                    }
                }
            }
        };
        let (env, body, id) = match whole {
            Ok(w) => w,
            Err(r) => {
                metrics.submits.with_label_values(&["refused"]).inc();
                tracing::debug!(code = r.code, reason = %r.reason, "submit refused");
                let resp = submit_resp(r.status, seq, "");
                return self
                    .write(resp)
                    .await
                    .err()
                    .map(|_| End::Peer("write failed"));
            }
        };
        let cfg = &self.server.config;
        let (req, status) = match request_for(
            &account,
            &env,
            body,
            id.clone(),
            &cfg.limits,
            self.server.country,
            now,
        ) {
            Ok(r) => r,
            Err(status) => {
                metrics.submits.with_label_values(&["refused"]).inc();
                let resp = submit_resp(status, seq, "");
                return self
                    .write(resp)
                    .await
                    .err()
                    .map(|_| End::Peer("write failed"));
            }
        };
        // A valid message counts against its account's quota for the day.
        if status == CommandStatus::EsmeRok && !self.server.within_quota(&req.client_id, now) {
            metrics.submits.with_label_values(&["over_quota"]).inc();
            let resp = submit_resp(CommandStatus::EsmeRthrottled, seq, "");
            return self
                .write(resp)
                .await
                .err()
                .map(|_| End::Peer("write failed"));
        }
        let rec = match OutRecord::avro(self.server.topics.ingest(), id.clone(), &req) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "submit could not be encoded");
                let resp = submit_resp(CommandStatus::EsmeRsyserr, seq, "");
                return self
                    .write(resp)
                    .await
                    .err()
                    .map(|_| End::Peer("write failed"));
            }
        };
        let ack = self.server.producer.enqueue(&rec).await;
        self.answers.push(Box::pin(async move {
            let stored = match ack {
                Ok(f) => matches!(f.await, Ok(Ok(_))),
                Err(_) => false,
            };
            let result = match (stored, status) {
                (false, _) => "unavailable",
                (true, CommandStatus::EsmeRok) => "accepted",
                (true, _) => "rejected",
            };
            metrics.submits.with_label_values(&[result]).inc();
            match (stored, status) {
                (false, _) => submit_resp(CommandStatus::EsmeRsyserr, seq, ""),
                (true, CommandStatus::EsmeRok) => submit_resp(CommandStatus::EsmeRok, seq, &id),
                (true, refused) => submit_resp(refused, seq, ""),
            }
        }));
        None
    }

    /// Dead-letters the parts of messages that will never be complete: received, never
    /// accepted, and kept where an operator can see them.
    async fn give_up(&mut self, incomplete: Vec<Pending>) {
        let system_id = self
            .bound
            .as_ref()
            .map(|(a, _)| a.system_id.clone())
            .unwrap_or_default();
        for p in incomplete {
            self.server.metrics.incomplete.inc();
            let rec = self.server.incomplete_dead_letter(&system_id, &p);
            let sent =
                tokio::time::timeout(CLOSE_WAIT, smsgw_kafka::send(&self.server.producer, &rec))
                    .await;
            if !matches!(sent, Ok(Ok(()))) {
                tracing::error!("could not dead-letter an incomplete message");
            }
        }
    }
}

/// The `query_sm_resp` for message `id` of `account`: its state from the event log, or
/// `ESME_RQUERYFAIL` for a message the server does not know as the account's.
fn query(server: &Server, account: &Account, seq: u32, id: &str) -> Command {
    use rusmpp::pdus::QuerySmResp;
    use rusmpp::types::EmptyOrFullCOctetString;
    let cid = COctetString::from_string(id.to_string()).unwrap_or_default();
    match server.status.get(id, &account.system_id) {
        Some(s) => {
            let final_date = s
                .final_at
                .and_then(|t| {
                    EmptyOrFullCOctetString::from_string(smsgw_smpp::smpp_absolute_time(t)).ok()
                })
                .unwrap_or_else(EmptyOrFullCOctetString::empty);
            Command::new(
                CommandStatus::EsmeRok,
                seq,
                QuerySmResp::new(cid, final_date, s.state, s.error_code),
            )
        }
        None => Command::new(
            CommandStatus::EsmeRqueryfail,
            seq,
            QuerySmResp::new(
                cid,
                EmptyOrFullCOctetString::empty(),
                rusmpp::values::MessageState::Unknown,
                0,
            ),
        ),
    }
}

/// How long `cancel_sm` waits for the router or the dispatcher to stop the message.
const CANCEL_WAIT: Duration = Duration::from_secs(3);

/// `cancel_sm`, as `DELETE /v1/messages/{id}` does it: a message of the account that
/// has not gone to a carrier gets a `CancelRequested`; `ESME_ROK` once the event log
/// shows it cancelled, `ESME_RCANCELFAIL` when it was unknown, already submitted or
/// ended, or not stopped within [`CANCEL_WAIT`].
async fn cancel(server: Arc<Server>, account: Account, seq: u32, id: String) -> Command {
    let fail = Command::new(CommandStatus::EsmeRcancelfail, seq, Pdu::CancelSmResp);
    let ok = Command::new(CommandStatus::EsmeRok, seq, Pdu::CancelSmResp);
    match server.status.get(&id, &account.system_id) {
        Some(s) if s.cancellable() => {}
        _ => return fail,
    }
    let req = smsgw_codec::CancelRequested {
        message_id: id.clone(),
        actor: Some(format!(
            "{}{}",
            smsgw_codec::SMPP_CLIENT_REF_PREFIX,
            account.system_id
        )),
        requested_at: now_ms(),
    };
    let stored = match OutRecord::avro(server.topics.cancellations(), id.clone(), &req) {
        Ok(rec) => smsgw_kafka::send(&server.producer, &rec).await.is_ok(),
        Err(_) => false,
    };
    if !stored {
        return Command::new(CommandStatus::EsmeRsyserr, seq, Pdu::CancelSmResp);
    }
    let deadline = tokio::time::Instant::now() + CANCEL_WAIT;
    while tokio::time::Instant::now() < deadline {
        match server.status.get(&id, &account.system_id) {
            Some(s) if s.state == rusmpp::values::MessageState::Deleted => return ok,
            Some(s) if !s.cancellable() => return fail,
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    fail
}

/// The next receipt to send, once the session takes receipts (never, before).
async fn next_outbound(rx: &mut Option<mpsc::Receiver<Outbound>>) -> Option<Outbound> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

fn nack(status: CommandStatus, seq: u32) -> Command {
    Command::new(status, seq, Pdu::GenericNack)
}

fn submit_resp(status: CommandStatus, seq: u32, id: &str) -> Command {
    let id = COctetString::from_string(id.to_string()).unwrap_or_default();
    Command::new(status, seq, SubmitSmResp::new(id, Vec::new()))
}

/// The request a submit becomes, and the status to answer once it is stored
/// (`ESME_ROK`, or the admission refusal's: a request admission refuses is stored too,
/// so the event log records the rejection with its reason). `Err`: what the account may
/// not do at all (a source address it may not use), answered at once and never stored.
pub fn request_for(
    account: &Account,
    env: &Envelope,
    body: String,
    message_id: String,
    limits: &smsgw_admission::Limits,
    country: Option<phonenumber::country::Id>,
    now_ms: i64,
) -> Result<(SubmitRequest, CommandStatus), CommandStatus> {
    let allowed = account.senders.as_ref().is_none_or(|s| {
        s.iter()
            .any(|a| a.trim_start_matches('+') == env.from.trim_start_matches('+'))
    });
    if !allowed {
        return Err(CommandStatus::EsmeRinvsrcadr);
    }
    // A schedule too near to hold is sent at once, as an SMSC would.
    let send_at = env
        .deliver_at
        .filter(|at| *at >= now_ms + limits.min_send_at_ahead_s * 1000);
    let starts = send_at.unwrap_or(now_ms);
    let validity = env
        .expires_at
        .map(|e| i32::try_from(((e - starts) / 1000).max(0)).unwrap_or(i32::MAX));
    let req = SubmitRequest {
        client_id: account.client_id.clone(),
        to: env.to.clone(),
        from: env.from.clone(),
        body,
        idempotency_key: None,
        message_id: Some(message_id),
        // Marks the message as the account's: its receipts go back over SMPP.
        client_ref: Some(format!(
            "{}{}",
            smsgw_codec::SMPP_CLIENT_REF_PREFIX,
            account.system_id
        )),
        registered_delivery: env.receipt.then_some(true),
        validity_period_s: validity,
        schedule_delivery_at: None,
        callback_url: None,
        send_at,
        message_type: None,
    };
    let status = match smsgw_admission::validate(&req, limits, country, now_ms) {
        Ok(_) => CommandStatus::EsmeRok,
        Err(r) => submit::status_of(&r),
    };
    Ok((req, status))
}
