//! One SMPP session (transceiver, transmitter or receiver): bind, keep alive, forward
//! what the carrier sends, reconnect with backoff and jitter. Sessions that can submit
//! put their client in the carrier's [`BindPool`] while bound.

use crate::config::{CarrierConfig, ReceiptIds, Role};
use crate::metrics::Metrics;
use crate::pdu::{classify_deliver, decimal_to_hex, Delivered};
use crate::pool::BindPool;
use futures::StreamExt;
use rusmpp::pdus::{BindReceiver, BindTransceiver, BindTransmitter, DeliverSmResp};
use rusmpp::types::COctetString;
use rusmpp::values::{InterfaceVersion, Npi, Ton};
use rusmpp::{CommandId, Pdu};
use rusmppc::{Client, ConnectionBuilder, Event};
use smsgw_codec::{CarrierStatusChanged, DeadLetter};
use smsgw_kafka::{now_ms, send, OutRecord, Producer, Topics};
use smsgw_smpp::normalize_message_id;
use std::time::Duration;
use tokio::sync::watch;

/// What a session needs.
#[derive(Debug, Clone)]
pub struct SessionCtx {
    /// Carrier settings.
    pub carrier: CarrierConfig,
    /// Producer for receipts, MO, status and dead letters.
    pub producer: Producer,
    /// Topic names.
    pub topics: Topics,
    /// Metrics.
    pub metrics: Metrics,
    /// Readiness checks (`carrier:<name>`, reported, not gating: the router fails over).
    pub health: smsgw_runtime::Health,
    /// Concatenated MO parts waiting for their siblings (per carrier).
    pub mo: std::sync::Arc<std::sync::Mutex<crate::mo::Reassembler<(Client, u32)>>>,
    /// This dispatcher's instance number (`kafka.instance`): its status is its own.
    pub instance: u32,
}

fn cstr<const MIN: usize, const MAX: usize>(s: &str) -> Result<COctetString<MIN, MAX>, String> {
    COctetString::from_string(s.to_string()).map_err(|e| e.to_string())
}

type Events = Box<dyn futures::Stream<Item = Event> + Unpin + Send>;

/// Longest PDU accepted from a carrier.
const MAX_PDU: usize = 65_536;

/// A bound session: its client, its events, the guard's wake-up handle, and the permits
/// of inbound requests being stored (see [`crate::guard::guard`]).
type Bound = (
    Client,
    Events,
    crate::guard::Wake,
    std::sync::Arc<tokio::sync::Semaphore>,
);

async fn connect(ctx: &SessionCtx, role: Role) -> Result<Bound, String> {
    let c = &ctx.carrier;
    let tls = c.url.starts_with("smpps://");
    let addr = c
        .url
        .trim_start_matches("smpps://")
        .trim_start_matches("smpp://")
        .trim_end_matches('/');
    let socket = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let _ = socket.set_nodelay(true);
    let (metrics, name) = (ctx.metrics.clone(), c.name.clone());
    let inbound = std::sync::Arc::new(tokio::sync::Semaphore::new(c.inbound_in_flight));
    let on_garbage = move |g| {
        let kind = match g {
            crate::guard::Garbage::Dropped => "malformed_pdu",
            crate::guard::Garbage::Desync => "desync",
        };
        metrics.inbound.with_label_values(&[&name, kind]).inc();
        tracing::warn!(carrier = %name, kind, "malformed PDU from the carrier answered with generic_nack");
    };
    let (stream, wake) = if tls {
        let socket = crate::tls::handshake(c, socket).await?;
        crate::guard::guard(socket, MAX_PDU, inbound.clone(), on_garbage)
    } else {
        crate::guard::guard(socket, MAX_PDU, inbound.clone(), on_garbage)
    };
    let (client, events) = ConnectionBuilder::new()
        .disable_interface_version_check()
        .enquire_link_interval(Duration::from_millis(c.enquire_link_ms))
        .response_timeout(c.response_timeout())
        .max_command_length(MAX_PDU)
        .connected(stream);
    let (id, pw, st) = (
        cstr(&c.system_id)?,
        cstr(&crate::http::secret(&c.password)?)?,
        cstr(&c.system_type)?,
    );
    // The three bind PDUs have the same fields.
    macro_rules! bind_pdu {
        ($t:ty) => {
            <$t>::new(
                id,
                pw,
                st,
                InterfaceVersion::Smpp3_4,
                Ton::Unknown,
                Npi::Unknown,
                COctetString::empty(),
            )
        };
    }
    let bound = match role {
        Role::Trx => client
            .bind_transceiver(bind_pdu!(BindTransceiver))
            .await
            .map(drop),
        Role::Tx => client
            .bind_transmitter(bind_pdu!(BindTransmitter))
            .await
            .map(drop),
        Role::Rx => client
            .bind_receiver(bind_pdu!(BindReceiver))
            .await
            .map(drop),
    };
    if let Err(e) = bound {
        let _ = client.close().await;
        return Err(format!("bind: {e}"));
    }
    Ok((client, Box::new(events), wake, inbound))
}

/// Publishes the carrier status changes of one session, in order, off the session's
/// loop: a slow or absent broker never holds up the bind's PDUs (a receipt or MO waiting
/// behind a carrier-status write would wait for the whole outage). At most two changes
/// per connection are queued.
fn status_publisher(
    ctx: SessionCtx,
) -> (
    tokio::sync::mpsc::UnboundedSender<(bool, &'static str)>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(bool, &'static str)>();
    let task = tokio::spawn(async move {
        while let Some((up, detail)) = rx.recv().await {
            publish_status(&ctx, up, detail).await;
        }
    });
    (tx, task)
}

/// Marks the carrier up or down in this process's readiness checks, at once.
fn mark(ctx: &SessionCtx, up: bool, detail: &str) {
    ctx.health
        .set(&format!("carrier:{}", ctx.carrier.name), up, false, detail);
}

async fn publish_status(ctx: &SessionCtx, up: bool, detail: &str) {
    let s = CarrierStatusChanged {
        carrier: ctx.carrier.name.clone(),
        up,
        detail: detail.into(),
        changed_at: now_ms(),
        instance: Some(ctx.instance.to_string()),
    };
    match OutRecord::avro(ctx.topics.carrier_status(), s.key(), &s) {
        Ok(rec) => {
            if let Err(e) = send(&ctx.producer, &rec).await {
                tracing::warn!(carrier = %ctx.carrier.name, error = %e, "could not publish carrier status");
            }
        }
        Err(e) => tracing::warn!(error = %e, "carrier status encode"),
    }
}

/// Stores a reassembled MO, then acknowledges every part of it.
async fn store_mo_and_ack(
    ctx: &SessionCtx,
    m: smsgw_codec::InboundMessage,
    acks: Vec<(Client, u32)>,
) {
    let stored = match OutRecord::avro(ctx.topics.inbound(), m.from.clone(), &m) {
        Ok(rec) => send(&ctx.producer, &rec).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match stored {
        Ok(()) => {
            ctx.metrics
                .inbound
                .with_label_values(&[&ctx.carrier.name, "mo"])
                .inc();
            for (client, seq) in acks {
                let _ = client.deliver_sm_resp(seq, DeliverSmResp::default()).await;
            }
        }
        Err(e) => {
            tracing::error!(carrier = %ctx.carrier.name, error = %e, "reassembled MO not stored; parts not acknowledged")
        }
    }
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Runs the session in `slot` until `stop` turns true; then unbinds. A session that
/// submits is in `pool` while bound.
pub async fn run_session(
    ctx: SessionCtx,
    slot: usize,
    role: Role,
    pool: BindPool,
    mut stop: watch::Receiver<bool>,
) {
    let name = ctx.carrier.name.clone();
    let mode = role.as_str();
    let mut delay = Duration::from_millis(ctx.carrier.reconnect_min_ms);
    let max = Duration::from_millis(ctx.carrier.reconnect_max_ms);
    let (status, status_task) = status_publisher(ctx.clone());
    while !*stop.borrow() {
        let (client, mut events, wake, inbound) = match connect(&ctx, role).await {
            Ok(x) => x,
            Err(e) => {
                ctx.metrics
                    .binds
                    .with_label_values(&[&name, "failed"])
                    .inc();
                tracing::warn!(carrier = %name, slot, mode, error = %e, retry_in_ms = delay.as_millis() as u64, "bind failed");
                let jitter = rand::random_range(0.5..1.5);
                tokio::select! {
                    _ = tokio::time::sleep(delay.mul_f64(jitter)) => {}
                    _ = stopped(&mut stop) => break,
                }
                delay = (delay * 2).min(max);
                continue;
            }
        };
        ctx.metrics.binds.with_label_values(&[&name, "ok"]).inc();
        ctx.metrics.bound.with_label_values(&[&name, mode]).inc();
        tracing::info!(carrier = %name, slot, mode, "bound");
        delay = Duration::from_millis(ctx.carrier.reconnect_min_ms);
        if role.submits() && pool.up(slot, client.clone(), wake) {
            mark(&ctx, true, "bound");
            let _ = status.send((true, "bound"));
        }
        let mut sweep = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = sweep.tick() => {
                    let late = ctx.mo.lock().unwrap_or_else(|p| p.into_inner()).expire(now_ms());
                    for (m, acks) in late {
                        tracing::warn!(carrier = %name, "concatenated MO incomplete after the timeout; forwarding what arrived");
                        let ctx = ctx.clone();
                        tokio::spawn(async move { store_mo_and_ack(&ctx, m, acks).await });
                    }
                }
                _ = stopped(&mut stop) => {
                    let _ = client.unbind().await;
                    let _ = client.close().await;
                    break;
                }
                ev = events.next() => match ev {
                    // A response nobody waits for (timed out, or the guard's wake-up
                    // PDU) needs no answer: a generic_nack to a response is a protocol
                    // error.
                    Some(Event::Incoming(cmd)) if cmd.id().is_response() => {
                        if cmd.sequence_number() != crate::guard::WAKE_SEQUENCE {
                            tracing::debug!(carrier = %name, id = ?cmd.id(), seq = cmd.sequence_number(), "response to no pending request; ignored");
                        }
                    }
                    Some(Event::Incoming(cmd)) => {
                        // Each PDU is stored and acknowledged on its own, so one slow
                        // Kafka write never holds up the rest of the session. Receipts
                        // and MO each hold one of the guard's `inbound` permits until
                        // stored: with none left the guard reads no more from the
                        // socket, and TCP slows the carrier down.
                        let counted = matches!(cmd.id(), CommandId::DeliverSm | CommandId::DataSm);
                        let gauge = ctx.metrics.inbound_in_flight.with_label_values(&[&name]);
                        if counted {
                            gauge.inc();
                        }
                        let (ctx, client, inbound) = (ctx.clone(), client.clone(), inbound.clone());
                        tokio::spawn(async move {
                            on_incoming(ctx, client, cmd).await;
                            if counted {
                                gauge.dec();
                                inbound.add_permits(1);
                            }
                        });
                    }
                    Some(Event::Error(e)) => tracing::warn!(carrier = %name, error = %e, "session error"),
                    None => break,
                }
            }
        }
        let last = role.submits() && pool.down(slot);
        ctx.metrics.bound.with_label_values(&[&name, mode]).dec();
        let stopping = *stop.borrow();
        if stopping {
            tracing::info!(carrier = %name, slot, mode, "unbound");
        } else {
            tracing::warn!(carrier = %name, slot, mode, "session closed; reconnecting");
        }
        if last {
            let detail = if stopping {
                "unbound at shutdown"
            } else {
                "session closed"
            };
            mark(&ctx, false, detail);
            let _ = status.send((false, detail));
        }
    }
    // Best effort at shutdown: with the broker gone the last change would wait for the
    // producer's whole message timeout.
    drop(status);
    let bound = std::time::Duration::from_secs(5);
    if tokio::time::timeout(bound, status_task).await.is_err() {
        tracing::warn!(carrier = %name, "carrier status at shutdown not stored");
    }
}

async fn on_incoming(ctx: SessionCtx, client: Client, cmd: rusmpp::Command) {
    let ctx = &ctx;
    let seq = cmd.sequence_number();
    match cmd.pdu() {
        Some(Pdu::DeliverSm(d)) => {
            let (rec, kind) = match classify_deliver(&ctx.carrier.name, d, now_ms()) {
                Delivered::Receipt(mut r) => {
                    if ctx.carrier.receipt_ids == ReceiptIds::DecimalToHex {
                        r.carrier_message_id =
                            normalize_message_id(&decimal_to_hex(&r.carrier_message_id));
                    }
                    (
                        OutRecord::avro(ctx.topics.receipts(), r.key(), &r),
                        "receipt",
                    )
                }
                Delivered::Mo(m) => (
                    OutRecord::avro(ctx.topics.inbound(), m.from.clone(), &m),
                    "mo",
                ),
                Delivered::MoPart(m, c) => {
                    let done = ctx.mo.lock().unwrap_or_else(|p| p.into_inner()).add(
                        m,
                        c,
                        (client.clone(), seq),
                        now_ms(),
                    );
                    ctx.metrics
                        .inbound
                        .with_label_values(&[&ctx.carrier.name, "mo_part"])
                        .inc();
                    if let Some((whole, acks)) = done {
                        store_mo_and_ack(ctx, whole, acks).await;
                    }
                    return;
                }
                Delivered::BadReceipt(reason, text) => {
                    (bad_receipt(ctx, &reason, &text), "bad_receipt")
                }
            };
            ctx.metrics
                .inbound
                .with_label_values(&[&ctx.carrier.name, kind])
                .inc();
            tracing::debug!(carrier = %ctx.carrier.name, kind, seq, "deliver_sm received");
            let stored = match rec {
                Ok(rec) => send(&ctx.producer, &rec).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match stored {
                // Acknowledge only what Kafka holds: otherwise the carrier redelivers.
                Ok(()) => {
                    let _ = client.deliver_sm_resp(seq, DeliverSmResp::default()).await;
                }
                Err(e) => {
                    tracing::error!(carrier = %ctx.carrier.name, error = %e, "deliver_sm not stored; not acknowledged")
                }
            }
        }
        Some(Pdu::Unbind) => {
            let _ = client.unbind_resp(seq).await;
            let _ = client.close().await;
        }
        Some(Pdu::EnquireLink) => {}
        other => {
            tracing::debug!(carrier = %ctx.carrier.name, pdu = ?other.map(|p| p.command_id()), "unexpected PDU; generic_nack");
            let _ = client.generic_nack(seq).await;
        }
    }
}

fn bad_receipt(
    ctx: &SessionCtx,
    reason: &str,
    text: &str,
) -> Result<OutRecord, smsgw_kafka::KafkaError> {
    let dl = DeadLetter {
        service: "dispatcher".into(),
        reason: format!("unreadable delivery receipt: {reason}"),
        topic: format!("smpp:{}", ctx.carrier.name),
        partition: -1,
        offset: -1,
        key: None,
        payload: Some(text.as_bytes().to_vec()),
        headers: Default::default(),
        failed_at: now_ms(),
    };
    OutRecord::avro(ctx.topics.dead_letter(), ctx.carrier.name.clone(), &dl)
}
