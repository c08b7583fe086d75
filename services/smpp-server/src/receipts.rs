//! Delivery receipts (and MO) to the customer: each account's receipts wait on its own
//! topic (`smsgw.smpp.receipts.<system_id>`, one partition, written by the receipt
//! service; its inbound messages too, written by [`crate::mo`]) and go out as
//! `deliver_sm` to a bound receiver or transceiver session of the account.
//!
//! Data flow: while a replica holds at least one such session of an account, it runs
//! one [`deliver`] task for it: a consumer in the account's own group
//! (`smsgw-smpp-receipts.<system_id>`) on the account's topic. With
//! `kafka.assignment = "group"` (Kafka proper) the partition goes to one of the replicas
//! holding a session, so one replica sends and the others wait, and it moves when that
//! replica leaves or dies. With `static` (Tansu, whose group coordinator never hands a
//! dead member's partitions on) the server runs as one replica, which reads from the
//! group's committed offset without membership. With no session anywhere nobody reads,
//! and the receipts stay on Kafka until one binds. Receipts are sent in order, up to `receipt_window` at a time, each to a
//! session of the account; a receipt whose session closes or that is not answered in
//! `response_timeout_ms` is sent again on another (at least once: an ESME may see one
//! twice, with the same id). The offset is stored only once the ESME has answered
//! `deliver_sm_resp`, so a crash resends, never loses.

use crate::Server;
use futures::stream::FuturesOrdered;
use futures::{FutureExt, StreamExt};
use rusmpp::pdus::DeliverSm;
use rusmpp::tlvs::MessageDeliveryRequestTlvValue;
use rusmpp::types::{COctetString, OctetString};
use rusmpp::values::{EsmClass, MessageState, Npi, Ton};
use rusmpp::CommandStatus;
use smsgw_codec::{AvroRecord, SmppMo, SmppReceipt};
use smsgw_kafka::rdkafka::consumer::Consumer;
use smsgw_kafka::rdkafka::Message as _;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// A PDU a session is asked to send, and where its response goes.
#[derive(Debug)]
pub struct Outbound {
    /// The receipt.
    pub pdu: DeliverSm,
    /// The ESME's `deliver_sm_resp` status (dropped: the session closed first).
    pub reply: oneshot::Sender<CommandStatus>,
}

/// A session that takes receipts: its id and its queue.
#[derive(Debug, Clone)]
pub struct Receiver {
    /// Unique in this process.
    pub session: u64,
    /// Where its receipts go.
    pub tx: mpsc::Sender<Outbound>,
}

/// The receipt `stat` and `message_state` for a client status.
pub fn stat_of(status: &str) -> (&'static str, MessageState) {
    match status {
        "delivered" => ("DELIVRD", MessageState::Delivered),
        "expired" => ("EXPIRED", MessageState::Expired),
        "cancelled" => ("DELETED", MessageState::Deleted),
        "blocked" => ("REJECTD", MessageState::Rejected),
        _ => ("UNDELIV", MessageState::Undeliverable),
    }
}

/// `YYMMDDhhmm`, the receipt text's dates.
fn receipt_date(unix_ms: i64) -> String {
    let t = smsgw_smpp::utc(unix_ms);
    format!(
        "{:02}{:02}{:02}{:02}{:02}",
        t.year.rem_euclid(100),
        t.month,
        t.day,
        t.hour,
        t.minute
    )
}

/// An address for a PDU: `+digits` as an international number, digits alone as unknown,
/// anything else alphanumeric.
pub(crate) fn pdu_address(a: &str) -> (Ton, Npi, COctetString<1, 21>) {
    let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    let (ton, npi, s) = match a.strip_prefix('+') {
        Some(d) if digits(d) => (Ton::International, Npi::Isdn, d),
        _ if digits(a) => (Ton::Unknown, Npi::Isdn, a),
        _ => (Ton::Alphanumeric, Npi::Unknown, a),
    };
    let s: String = s.chars().take(20).collect();
    (ton, npi, COctetString::from_string(s).unwrap_or_default())
}

/// The `deliver_sm` of a receipt: from the recipient to the sender, `esm_class` 0x04,
/// the Appendix B text, and the `receipted_message_id` / `message_state` TLVs. The id is
/// the gateway's, exactly as `submit_sm_resp` gave it.
pub fn receipt_pdu(r: &SmppReceipt) -> DeliverSm {
    let (stat, state) = stat_of(&r.status);
    let err = r
        .error_code
        .as_deref()
        .filter(|e| e.len() <= 3 && e.chars().all(|c| c.is_ascii_digit()))
        .map(|e| format!("{e:0>3}"))
        .unwrap_or_else(|| if stat == "DELIVRD" { "000" } else { "001" }.to_string());
    let text = smsgw_smpp::format_receipt_text(
        &r.message_id,
        stat,
        &err,
        &receipt_date(r.submitted_at),
        &receipt_date(r.done_at),
        "",
    );
    let (src_ton, src_npi, source) = pdu_address(&r.destination);
    let (dst_ton, dst_npi, dest) = pdu_address(&r.source);
    let mut d = DeliverSm::builder()
        .source_addr_ton(src_ton)
        .source_addr_npi(src_npi)
        .source_addr(source)
        .dest_addr_ton(dst_ton)
        .dest_addr_npi(dst_npi)
        .destination_addr(dest)
        .esm_class(EsmClass::from(0x04))
        .short_message(OctetString::from_slice(text.as_bytes()).unwrap_or_default())
        .build();
    d.push_tlv(MessageDeliveryRequestTlvValue::ReceiptedMessageId(
        COctetString::from_string(r.message_id.clone()).unwrap_or_default(),
    ));
    d.push_tlv(MessageDeliveryRequestTlvValue::MessageState(state));
    d
}

/// What a record of the account's topic asks for: the PDUs to send, in order (a receipt,
/// or an MO's parts) and the result to count them under, or why it is not sent.
fn owed(
    payload: &[u8],
    system_id: &str,
    client_id: &str,
) -> Result<(&'static str, Vec<DeliverSm>), String> {
    if let Ok(r) = SmppReceipt::decode(payload) {
        if let Some(why) = refuse(&r, system_id, client_id) {
            return Err(why.to_string());
        }
        return Ok(("delivered", vec![receipt_pdu(&r)]));
    }
    match SmppMo::decode(payload) {
        Ok(m) if m.system_id != system_id => Err("MO for another system_id".into()),
        Ok(m) => crate::mo::mo_pdus(&m)
            .map(|p| ("mo_delivered", p))
            .map_err(|e| format!("MO cannot be sent: {e}")),
        Err(e) => Err(format!("undecodable SMPP receipt or MO: {e}")),
    }
}

/// Why a receipt record is not sent.
fn refuse(r: &SmppReceipt, system_id: &str, client_id: &str) -> Option<&'static str> {
    if r.system_id != system_id {
        return Some("receipt for another system_id");
    }
    if r.client_id != client_id {
        return Some("receipt for a message of another account");
    }
    None
}

/// Sends `pdu` to the account's sessions until one answers `ESME_ROK`. `None` when
/// the task was told to stop first.
async fn send_until_answered(
    server: &Server,
    system_id: &str,
    pdu: DeliverSm,
    stop: &watch::Receiver<bool>,
) -> Option<()> {
    let timeout = Duration::from_millis(server.config.response_timeout_ms);
    let mut turn = 0usize;
    let mut refused = 0u32;
    loop {
        if *stop.borrow() {
            return None;
        }
        let Some(rx) = server.receiver(system_id, turn) else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        turn = turn.wrapping_add(1);
        let (reply, answer) = oneshot::channel();
        let sent = rx
            .tx
            .send_timeout(
                Outbound {
                    pdu: pdu.clone(),
                    reply,
                },
                timeout,
            )
            .await;
        if sent.is_err() {
            continue;
        }
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(CommandStatus::EsmeRok)) => return Some(()),
            Ok(Ok(status)) => {
                // The ESME refused it (e.g. a temporary application error): later.
                refused += 1;
                server
                    .metrics
                    .receipts
                    .with_label_values(&["refused"])
                    .inc();
                tracing::warn!(
                    ?status,
                    refused,
                    "ESME refused a receipt; sending it again later"
                );
                tokio::time::sleep(Duration::from_millis(500 * u64::from(refused.min(20)))).await;
            }
            _ => server.metrics.receipts.with_label_values(&["resent"]).inc(),
        }
    }
}

/// Delivers the account's receipts while this replica holds a session of it (until
/// `stop` turns true).
pub async fn deliver(
    server: Arc<Server>,
    system_id: String,
    client_id: String,
    mut stop: watch::Receiver<bool>,
) {
    let topic = server.topics.smpp_receipts(&system_id);
    let group = format!("{}.{system_id}", server.config.receipt_group_prefix);
    let consumer = match smsgw_kafka::consumer(&server.config.kafka, &group) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "receipts consumer not created");
            return;
        }
    };
    // Group protocol: the partition goes to one replica holding a session, and moves
    // when it leaves or dies. Static (Tansu, one replica): read from the committed offset.
    let joined = smsgw_kafka::retry_startup("joining an account's receipts", || async {
        smsgw_kafka::join(&consumer, &server.config.kafka, &[&topic])
    })
    .await;
    if let Err(e) = joined {
        tracing::error!(error = %e, topic, "receipts topic not joined");
        return;
    }
    let window = server.config.receipt_window;
    let mut inflight = FuturesOrdered::new();
    loop {
        tokio::select! {
            // Answers first: a receipt answered just before the last session left is
            // stored, not sent again to the next one.
            biased;
            Some((partition, offset)) = inflight.next(), if !inflight.is_empty() => {
                let Some(offset): Option<i64> = offset else { break };
                let _ = consumer.store_offset(&topic, partition, offset);
            }
            _ = stop.changed() => break,
            m = consumer.recv(), if inflight.len() < window => {
                let m = match m {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(error = %e, "receipts consumer");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                };
                let (partition, offset) = (m.partition(), m.offset());
                let payload = m.payload().unwrap_or_default();
                let verdict = owed(payload, &system_id, &client_id);
                match verdict {
                    Ok((kind, pdus)) => {
                        let (server, system_id, stop) = (server.clone(), system_id.clone(), stop.clone());
                        inflight.push_back(Box::pin(async move {
                            for pdu in pdus {
                                if send_until_answered(&server, &system_id, pdu, &stop).await.is_none() {
                                    return (partition, None);
                                }
                            }
                            server.metrics.receipts.with_label_values(&[kind]).inc();
                            (partition, Some(offset))
                        }) as std::pin::Pin<Box<dyn std::future::Future<Output = (i32, Option<i64>)> + Send>>);
                    }
                    Err(why) => {
                        server.metrics.receipts.with_label_values(&["dead_lettered"]).inc();
                        let input = smsgw_kafka::Incoming::from_message(&m);
                        let rec = smsgw_kafka::dead_letter(
                            &server.topics.dead_letter(),
                            "smpp-server",
                            &why,
                            &input,
                            smsgw_kafka::now_ms(),
                        );
                        smsgw_kafka::send_until_stored(&server.producer, &rec).await;
                        inflight.push_back(Box::pin(async move { (partition, Some(offset)) }));
                    }
                }
            }
        }
    }
    // What was answered in the meantime is stored; receipts not answered stay
    // uncommitted, and whoever reads the topic next sends them. The commit and the
    // close block, so they run off the async threads.
    while let Some(Some((partition, Some(offset)))) = inflight.next().now_or_never() {
        let _ = consumer.store_offset(&topic, partition, offset);
    }
    drop(inflight);
    smsgw_kafka::close_consumer(consumer).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusmpp::tlvs::TlvValue;

    fn receipt(status: &str, err: Option<&str>) -> SmppReceipt {
        SmppReceipt {
            message_id: "0b5c4a8e-1f4e-4b8a-9f55-3e1d2c7a9b10".into(),
            event_id: "e".into(),
            system_id: "shop".into(),
            client_id: "acme".into(),
            status: status.into(),
            error_code: err.map(str::to_string),
            source: "Shop".into(),
            destination: "+447911123001".into(),
            submitted_at: 1_764_504_000_000, // 2025-11-30 12:00 UTC
            done_at: 1_764_504_060_000,
        }
    }

    #[test]
    fn a_receipt_carries_the_gateway_id_in_text_and_tlvs() {
        let d = receipt_pdu(&receipt("delivered", None));
        let text = String::from_utf8(d.short_message().as_ref().to_vec()).unwrap();
        let parsed = smsgw_smpp::parse_receipt_text(&text).unwrap();
        assert_eq!(parsed.id, "0b5c4a8e-1f4e-4b8a-9f55-3e1d2c7a9b10");
        assert_eq!(parsed.stat, "DELIVRD");
        assert_eq!(parsed.submit_date.as_deref(), Some("2511301200"));
        assert_eq!(parsed.done_date.as_deref(), Some("2511301201"));
        assert_eq!(u8::from(d.esm_class), 0x04);
        assert_eq!(
            (d.source_addr.as_str(), d.source_addr_ton),
            ("447911123001", Ton::International)
        );
        assert_eq!(
            (d.destination_addr.as_str(), d.dest_addr_ton),
            ("Shop", Ton::Alphanumeric)
        );
        let tlvs: Vec<_> = d.tlvs().iter().filter_map(|t| t.value().cloned()).collect();
        assert!(tlvs
            .iter()
            .any(|t| matches!(t, TlvValue::ReceiptedMessageId(id) if id.as_str() == parsed.id)));
        assert!(tlvs
            .iter()
            .any(|t| matches!(t, TlvValue::MessageState(MessageState::Delivered))));
    }

    #[test]
    fn every_final_status_has_its_stat_and_state() {
        for (status, stat, state) in [
            ("delivered", "DELIVRD", MessageState::Delivered),
            ("undelivered", "UNDELIV", MessageState::Undeliverable),
            ("failed", "UNDELIV", MessageState::Undeliverable),
            ("expired", "EXPIRED", MessageState::Expired),
            ("blocked", "REJECTD", MessageState::Rejected),
            ("cancelled", "DELETED", MessageState::Deleted),
        ] {
            assert_eq!(stat_of(status), (stat, state), "{status}");
        }
        let d = receipt_pdu(&receipt("undelivered", Some("34")));
        let text = String::from_utf8(d.short_message().as_ref().to_vec()).unwrap();
        assert!(text.contains("stat:UNDELIV err:034"), "{text}");
    }

    #[test]
    fn a_receipt_for_another_account_is_refused() {
        let r = receipt("delivered", None);
        assert_eq!(refuse(&r, "shop", "acme"), None);
        assert!(refuse(&r, "other", "acme").is_some());
        assert!(refuse(&r, "shop", "mallory").is_some());
    }
}
