//! Conversions between our records and SMPP PDUs. Pure, so every case is unit-tested.

use rusmpp::pdus::{DeliverSm, SubmitSm, SubmitSmResp};
use rusmpp::tlvs::{MessageSubmissionRequestTlvValue, TlvValue};
use rusmpp::types::{AnyOctetString, COctetString, EmptyOrFullCOctetString, OctetString};
use rusmpp::values::{DataCoding, EsmClass, MessagePayload, Npi, RegisteredDelivery, Ton};
use smsgw_codec::{
    CarrierRecord, CarrierRecordKind, DispatchRequested, InboundMessage, ReceiptReceived,
};
use smsgw_gsm::{Encoding, LongMode};
use smsgw_smpp::{normalize_message_id, parse_receipt_text, stat_from_message_state};

/// The concatenation reference of a message's attempt: stable across re-reads, so a
/// resent part carries the same reference as the first try.
pub fn concat_reference(message_id: &str, attempt: i32) -> u16 {
    let mut h: u32 = 2166136261;
    for b in message_id.bytes().chain(attempt.to_be_bytes()) {
        h = (h ^ b as u32).wrapping_mul(16777619);
    }
    (h ^ (h >> 16)) as u16
}

fn smpp_time(unix_ms: Option<i64>) -> EmptyOrFullCOctetString<17> {
    unix_ms
        .and_then(|t| EmptyOrFullCOctetString::from_string(smsgw_smpp::smpp_absolute_time(t)).ok())
        .unwrap_or_else(EmptyOrFullCOctetString::empty)
}

/// Builds the `submit_sm` PDUs for a dispatch request: one, or one per part of a long
/// message as `mode` says. The message's own `registered_delivery` overrides the
/// carrier's; its validity and carrier-side schedule go out as absolute UTC times.
pub fn build_submits(
    req: &DispatchRequested,
    registered_delivery: bool,
    mode: LongMode,
) -> Result<Vec<SubmitSm>, String> {
    let encoding = match req.encoding.as_str() {
        "UCS2" => Encoding::Ucs2,
        _ => Encoding::Gsm7,
    };
    let parts = smsgw_gsm::parts(
        &req.body,
        encoding,
        mode,
        concat_reference(&req.message_id, req.attempt),
    )?;
    let (src_ton, src_npi, source) = address(&req.sender);
    let (dst_ton, dst_npi, dest) = address(&req.destination);
    let source = COctetString::from_string(source).map_err(|e| format!("sender: {e}"))?;
    let dest = COctetString::from_string(dest).map_err(|e| format!("destination: {e}"))?;
    let rd = if req.registered_delivery.unwrap_or(registered_delivery) {
        RegisteredDelivery::request_all()
    } else {
        RegisteredDelivery::default()
    };
    parts
        .into_iter()
        .map(|part| {
            let esm = if part.udhi { 0x40 } else { 0x00 };
            let mut b = SubmitSm::builder()
                .source_addr_ton(src_ton)
                .source_addr_npi(src_npi)
                .source_addr(source.clone())
                .dest_addr_ton(dst_ton)
                .dest_addr_npi(dst_npi)
                .destination_addr(dest.clone())
                .esm_class(EsmClass::from(esm))
                .registered_delivery(rd)
                .validity_period(smpp_time(req.expires_at))
                .schedule_delivery_time(smpp_time(req.schedule_delivery_at))
                .data_coding(DataCoding::from(encoding.data_coding()));
            if part.payload {
                b = b.push_tlv(MessageSubmissionRequestTlvValue::MessagePayload(
                    MessagePayload::new(AnyOctetString::from_slice(&part.octets)),
                ));
            } else {
                b = b.short_message(
                    OctetString::from_slice(&part.octets).map_err(|e| format!("body: {e}"))?,
                );
            }
            if let Some((reference, total, seq)) = part.sar {
                b = b
                    .push_tlv(MessageSubmissionRequestTlvValue::SarMsgRefNum(reference))
                    .push_tlv(MessageSubmissionRequestTlvValue::SarTotalSegments(total))
                    .push_tlv(MessageSubmissionRequestTlvValue::SarSegmentSeqnum(seq));
            }
            Ok(b.build())
        })
        .collect()
}

/// TON/NPI and digits for an address: international numbers, short codes, alphanumerics.
fn address(a: &str) -> (Ton, Npi, String) {
    if let Some(d) = a.strip_prefix('+') {
        (Ton::International, Npi::Isdn, d.to_string())
    } else if a.chars().all(|c| c.is_ascii_digit()) {
        if a.len() <= 8 {
            (Ton::NetworkSpecific, Npi::Unknown, a.to_string())
        } else {
            (Ton::International, Npi::Isdn, a.to_string())
        }
    } else {
        (Ton::Alphanumeric, Npi::Unknown, a.to_string())
    }
}

/// What one `submit_sm` came to.
#[derive(Debug, PartialEq)]
pub enum Attempt {
    /// `submit_sm_resp` with status 0 and the carrier's (normalised) id.
    Accepted(String),
    /// An error status: the carrier's error policy decides what it means.
    Refused(u32, String),
    /// The PDU may have reached the carrier but we have no answer (timeout, link broke).
    Unknown(String),
    /// The PDU never left (closed session, encoding error).
    NotSent(String),
    /// Shutdown came before the PDU left: nothing to record, the work goes to the next
    /// owner.
    Abandoned,
}

/// Classifies the result of `submit_sm`.
pub fn classify(result: Result<SubmitSmResp, rusmppc::error::Error>) -> Attempt {
    use rusmppc::error::Error as E;
    match result {
        Ok(resp) => Attempt::Accepted(normalize_message_id(resp.message_id().as_str())),
        Err(E::UnexpectedResponse { response }) => {
            let code = u32::from(response.status());
            Attempt::Refused(code, format!("{:?} (0x{code:08X})", response.status()))
        }
        // A closed connection may have taken the PDU with it: count it as unknown.
        Err(
            e @ (E::ResponseTimeout { .. }
            | E::ConnectionClosed
            | E::ConnectionClosedByPeer
            | E::Io(_)),
        ) => Attempt::Unknown(format!("outcome unknown: {e}")),
        Err(e) => Attempt::NotSent(format!("not sent: {e}")),
    }
}

/// Receipt ids as the submit response gave them (see `ReceiptIds::DecimalToHex`).
pub fn decimal_to_hex(id: &str) -> String {
    match id.parse::<u64>() {
        Ok(n) => format!("{n:x}"),
        Err(_) => id.to_string(),
    }
}

/// What a `deliver_sm` carried.
#[derive(Debug, PartialEq)]
pub enum Delivered {
    /// A delivery receipt, ready for the receipts topic.
    Receipt(CarrierRecord),
    /// A mobile-originated message, ready for the inbound topic.
    Mo(InboundMessage),
    /// One part of a concatenated MO message (UDH or SAR), to reassemble.
    MoPart(InboundMessage, smsgw_gsm::Concat),
    /// A receipt we could not read, with the reason and its text.
    BadReceipt(String, String),
}

fn body_octets(d: &DeliverSm) -> Vec<u8> {
    let short = d.short_message().as_ref().to_vec();
    if !short.is_empty() {
        return short;
    }
    for t in d.tlvs() {
        if let Some(TlvValue::MessagePayload(p)) = t.value() {
            return p.value.as_ref().to_vec();
        }
    }
    short
}

/// Classifies a `deliver_sm` from `carrier`, received at `now_ms`.
pub fn classify_deliver(carrier: &str, d: &DeliverSm, now_ms: i64) -> Delivered {
    let esm = u8::from(d.esm_class);
    let octets = body_octets(d);
    let coding = u8::from(d.data_coding);
    let text = smsgw_gsm::decode(&octets, coding)
        .unwrap_or_else(|_| String::from_utf8_lossy(&octets).into_owned());
    // esm_class bits 5-2: 0001 is an SMSC delivery receipt, 1000 an intermediate
    // notification. (0010, an SME delivery acknowledgement, is handset traffic.)
    if esm & 0x3C == 0x04 || esm & 0x3C == 0x20 {
        let mut tlv_id = None;
        let mut tlv_state = None;
        let mut tlv_err = None;
        for t in d.tlvs() {
            match t.value() {
                Some(TlvValue::ReceiptedMessageId(id)) => tlv_id = Some(id.as_str().to_string()),
                Some(TlvValue::MessageState(s)) => tlv_state = Some(u8::from(*s)),
                Some(TlvValue::NetworkErrorCode(n)) => tlv_err = Some(format!("{n:?}")),
                _ => {}
            }
        }
        let parsed = parse_receipt_text(&text);
        let (id, stat, err) = match (tlv_id, tlv_state, parsed) {
            (Some(id), Some(state), p) => (
                id,
                stat_from_message_state(state).to_string(),
                tlv_err.or(p.ok().and_then(|p| p.err)),
            ),
            (id, _, Ok(p)) => (id.unwrap_or(p.id), p.stat, p.err),
            (_, _, Err(e)) => return Delivered::BadReceipt(e.to_string(), text),
        };
        return Delivered::Receipt(CarrierRecord {
            carrier: carrier.to_string(),
            carrier_message_id: normalize_message_id(&id),
            received_at: now_ms,
            kind: CarrierRecordKind::ReceiptReceived(ReceiptReceived {
                stat,
                error_code: err,
                raw_text: (!text.is_empty()).then_some(text),
            }),
        });
    }
    // A concatenated MO: the UDH is not text; SAR TLVs say the same out of band.
    let mut concat = None;
    let mut text = text;
    if esm & 0x40 != 0 {
        match smsgw_gsm::read_udh(&octets) {
            Ok((c, rest)) => {
                concat = c;
                text = smsgw_gsm::decode(rest, coding)
                    .unwrap_or_else(|_| String::from_utf8_lossy(rest).into_owned());
            }
            Err(e) => tracing::debug!(error = %e, "MO with a malformed UDH; kept as text"),
        }
    }
    let (mut sar_ref, mut sar_total, mut sar_seq) = (None, None, None);
    for t in d.tlvs() {
        match t.value() {
            Some(TlvValue::SarMsgRefNum(r)) => sar_ref = Some(*r),
            Some(TlvValue::SarTotalSegments(n)) => sar_total = Some(*n),
            Some(TlvValue::SarSegmentSeqnum(n)) => sar_seq = Some(*n),
            _ => {}
        }
    }
    if let (None, Some(reference), Some(total), Some(seq)) = (concat, sar_ref, sar_total, sar_seq) {
        if total > 0 && seq > 0 && seq <= total {
            concat = Some(smsgw_gsm::Concat {
                reference,
                total,
                seq,
            });
        }
    }
    let from = d.source_addr.as_str().to_string();
    let from = if from.len() > 8 && from.chars().all(|c| c.is_ascii_digit()) {
        format!("+{from}")
    } else {
        from
    };
    let to = d.destination_addr.as_str().to_string();
    let m = InboundMessage {
        inbound_id: uuid::Uuid::new_v4().to_string(),
        carrier: carrier.to_string(),
        from,
        to,
        body: text,
        received_at: now_ms,
    };
    match concat.filter(|c| c.total > 1) {
        Some(c) => Delivered::MoPart(m, c),
        None => Delivered::Mo(m),
    }
}

#[cfg(test)]
mod tests;
