//! What a `submit_sm` asks for, read without I/O: its text (or one part of a long
//! text), addresses, receipt request and times, and the SMPP status of every way it
//! can be refused. Pure, with the clock passed in, so every case is unit-tested.

use rusmpp::pdus::SubmitSm;
use rusmpp::tlvs::TlvValue;
use rusmpp::values::Ton;
use rusmpp::CommandStatus;
use smsgw_admission::Rejection;
use smsgw_gsm::Concat;

/// The fields of a submit that every part of a long message shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Source address as the gateway writes it (`+` for international numbers).
    pub from: String,
    /// Destination as the gateway writes it.
    pub to: String,
    /// The ESME asked for a delivery receipt (`registered_delivery` bits 0-1).
    pub receipt: bool,
    /// `validity_period`, as Unix ms.
    pub expires_at: Option<i64>,
    /// `schedule_delivery_time`, as Unix ms.
    pub deliver_at: Option<i64>,
    /// `data_coding` the text is decoded with: as sent, except IA5 (1) from an account
    /// whose clients mean GSM-7 by it (0).
    pub data_coding: u8,
}

/// A read `submit_sm`: a whole message, or one part of a concatenated one whose octets
/// are decoded only once every part is in (a character may straddle two parts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Submitted {
    /// A complete message.
    Whole(Envelope, String),
    /// One part (UDH or SAR), its text octets without the header.
    Part(Envelope, Concat, Vec<u8>),
}

/// A refused submit: the status for `submit_sm_resp` and why, for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// What the ESME is told.
    pub status: CommandStatus,
    /// A stable code (the admission code where admission refused it).
    pub code: &'static str,
    /// For humans.
    pub reason: String,
}

impl Refused {
    fn new(status: CommandStatus, code: &'static str, reason: impl Into<String>) -> Self {
        Refused {
            status,
            code,
            reason: reason.into(),
        }
    }
}

/// The SMPP status for an admission refusal (the table in docs/smpp-server.md).
pub fn status_of(r: &Rejection) -> CommandStatus {
    match r.code {
        "invalid_destination" => CommandStatus::EsmeRinvdstadr,
        "invalid_sender" => CommandStatus::EsmeRinvsrcadr,
        "empty_body" | "body_too_long" => CommandStatus::EsmeRinvmsglen,
        "invalid_validity_period" => CommandStatus::EsmeRinvexpiry,
        "invalid_schedule" | "invalid_send_at" => CommandStatus::EsmeRinvsched,
        _ => CommandStatus::EsmeRsubmitfail,
    }
}

/// An address as the gateway writes it: numbers with an international TON, or with an
/// unknown TON and no national default, get a `+`; alphanumeric ones stay as sent.
fn address(ton: Ton, addr: &str, national_default: bool) -> String {
    let digits = !addr.is_empty() && addr.chars().all(|c| c.is_ascii_digit());
    match ton {
        Ton::International if digits => format!("+{addr}"),
        Ton::Unknown if digits && !national_default => format!("+{addr}"),
        _ => addr.to_string(),
    }
}

/// Whether the gateway can carry text sent with this `data_coding`: the SMSC default
/// (GSM-7, unpacked), IA5, Latin-1, UCS-2, and the GSM-7 message classes (`0xF0`-`0xF3`).
fn text_coding(dc: u8) -> Option<u8> {
    match dc {
        0x00 | 0x01 | 0x03 | 0x08 => Some(dc),
        0xF0..=0xF3 => Some(0x00),
        _ => None,
    }
}

/// Decodes a whole message's octets.
pub fn decode_text(octets: &[u8], data_coding: u8) -> Result<String, Refused> {
    let dc = text_coding(data_coding).ok_or_else(|| {
        Refused::new(
            CommandStatus::EsmeRinvdcs,
            "invalid_data_coding",
            format!("data_coding {data_coding:#04x} is not text the gateway carries"),
        )
    })?;
    if dc == 0x08 && !octets.len().is_multiple_of(2) {
        return Err(Refused::new(
            CommandStatus::EsmeRinvmsglen,
            "invalid_ucs2",
            "UCS-2 text has an odd number of octets",
        ));
    }
    smsgw_gsm::decode(octets, dc).map_err(|e| {
        Refused::new(
            CommandStatus::EsmeRinvdcs,
            "invalid_text",
            format!("text does not decode as data_coding {data_coding:#04x}: {e}"),
        )
    })
}

/// How a session's submits are read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reading {
    /// The gateway has a default country for numbers given without their country code.
    pub national_default: bool,
    /// `data_coding` 1 (IA5) carries GSM-7 from this account: the npm `smpp` client and
    /// some Kannel setups send the GSM default alphabet under 1, so `@` arrives as 0x00
    /// and `€` as ESC 0x65.
    pub ia5_is_gsm7: bool,
}

/// Reads a `submit_sm` received at `now_ms`.
pub fn read(sm: &SubmitSm, how: Reading, now_ms: i64) -> Result<Submitted, Refused> {
    let national_default = how.national_default;
    let short = sm.short_message().as_ref();
    let mut payload = None;
    let (mut sar_ref, mut sar_total, mut sar_seq) = (None, None, None);
    for t in sm.tlvs() {
        match t.value() {
            Some(TlvValue::MessagePayload(p)) => payload = Some(p.value.as_ref()),
            Some(TlvValue::SarMsgRefNum(r)) => sar_ref = Some(*r),
            Some(TlvValue::SarTotalSegments(n)) => sar_total = Some(*n),
            Some(TlvValue::SarSegmentSeqnum(n)) => sar_seq = Some(*n),
            _ => {}
        }
    }
    let octets = match payload {
        Some(_) if !short.is_empty() => {
            return Err(Refused::new(
                CommandStatus::EsmeRinvtlvval,
                "payload_and_short_message",
                "message_payload is set, so short_message must be empty",
            ))
        }
        Some(p) => p,
        None => short,
    };
    let time = |field: &'static str, s: &str, status| {
        smsgw_smpp::parse_smpp_time(s, now_ms)
            .map_err(|e| Refused::new(status, field, e.to_string()))
    };
    let env = Envelope {
        from: address(
            sm.source_addr_ton,
            sm.source_addr.as_str(),
            national_default,
        ),
        to: address(
            sm.dest_addr_ton,
            sm.destination_addr.as_str(),
            national_default,
        ),
        receipt: u8::from(sm.registered_delivery) & 0x03 != 0,
        expires_at: time(
            "invalid_validity_period",
            sm.validity_period.as_str(),
            CommandStatus::EsmeRinvexpiry,
        )?,
        deliver_at: time(
            "invalid_schedule",
            sm.schedule_delivery_time.as_str(),
            CommandStatus::EsmeRinvsched,
        )?,
        data_coding: match u8::from(sm.data_coding) {
            0x01 if how.ia5_is_gsm7 => 0x00,
            dc => dc,
        },
    };
    if env.expires_at.is_some_and(|e| e <= now_ms) {
        return Err(Refused::new(
            CommandStatus::EsmeRinvexpiry,
            "invalid_validity_period",
            "validity_period has already passed",
        ));
    }
    text_coding(env.data_coding).ok_or_else(|| {
        Refused::new(
            CommandStatus::EsmeRinvdcs,
            "invalid_data_coding",
            format!(
                "data_coding {:#04x} is not text the gateway carries",
                env.data_coding
            ),
        )
    })?;
    let mut concat = None;
    let mut text = octets;
    if u8::from(sm.esm_class) & 0x40 != 0 {
        let (c, rest) = smsgw_gsm::read_udh(octets)
            .map_err(|e| Refused::new(CommandStatus::EsmeRinvesmclass, "invalid_udh", e))?;
        concat = c;
        text = rest;
    }
    if let (None, Some(reference), Some(total), Some(seq)) = (concat, sar_ref, sar_total, sar_seq) {
        if total == 0 || seq == 0 || seq > total {
            return Err(Refused::new(
                CommandStatus::EsmeRinvtlvval,
                "invalid_sar",
                format!("sar_segment_seqnum {seq} of sar_total_segments {total}"),
            ));
        }
        concat = Some(Concat {
            reference,
            total,
            seq,
        });
    }
    match concat.filter(|c| c.total > 1) {
        Some(c) => Ok(Submitted::Part(env, c, text.to_vec())),
        None => {
            let body = decode_text(text, env.data_coding)?;
            Ok(Submitted::Whole(env, body))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusmpp::tlvs::MessageSubmissionRequestTlvValue;
    use rusmpp::types::{AnyOctetString, COctetString, EmptyOrFullCOctetString, OctetString};
    use rusmpp::values::{DataCoding, EsmClass, MessagePayload, RegisteredDelivery};

    const NOW: i64 = 1_764_000_000_000;

    fn sm(dc: u8, esm: u8, short: &[u8]) -> rusmpp::pdus::builders::SubmitSmBuilder {
        SubmitSm::builder()
            .source_addr_ton(Ton::Alphanumeric)
            .source_addr(COctetString::from_string("Shop".into()).unwrap())
            .dest_addr_ton(Ton::International)
            .destination_addr(COctetString::from_string("447700900123".into()).unwrap())
            .esm_class(EsmClass::from(esm))
            .data_coding(DataCoding::from(dc))
            .short_message(OctetString::from_slice(short).unwrap())
    }

    fn whole(s: &SubmitSm) -> (Envelope, String) {
        match read(s, Reading::default(), NOW).unwrap() {
            Submitted::Whole(e, t) => (e, t),
            other => panic!("not whole: {other:?}"),
        }
    }

    #[test]
    fn gsm7_latin1_and_ucs2_text_is_decoded() {
        let (env, t) = whole(&sm(0, 0, &[0x48, 0x69, 0x1B, 0x65]).build());
        assert_eq!(t, "Hi€");
        assert_eq!(
            (env.from.as_str(), env.to.as_str()),
            ("Shop", "+447700900123")
        );
        assert_eq!(
            whole(&sm(3, 0, &[0x63, 0x61, 0x66, 0xE9]).build()).1,
            "café"
        );
        assert_eq!(whole(&sm(8, 0, &[0x04, 0x1F, 0x00, 0x21]).build()).1, "П!");
        assert_eq!(whole(&sm(0xF1, 0, b"class 1").build()).1, "class 1");
        // IA5 is ASCII, unless the account says its clients mean GSM-7 by it.
        let gsm_under_ia5 = sm(1, 0, &[0x02, 0x35, 0x20, 0x00, 0x1B, 0x65]).build();
        assert_eq!(whole(&gsm_under_ia5).1, "\u{2}5 \u{0}\u{1b}e");
        let how = Reading {
            ia5_is_gsm7: true,
            ..Reading::default()
        };
        let Submitted::Whole(_, t) = read(&gsm_under_ia5, how, NOW).unwrap() else {
            panic!()
        };
        assert_eq!(t, "$5 @€");
    }

    #[test]
    fn binary_and_broken_text_are_refused_with_the_smpp_status() {
        let e = read(&sm(4, 0, &[1, 2, 3]).build(), Reading::default(), NOW).unwrap_err();
        assert_eq!(e.status, CommandStatus::EsmeRinvdcs);
        let e = read(
            &sm(8, 0, &[0x04, 0x1F, 0x00]).build(),
            Reading::default(),
            NOW,
        )
        .unwrap_err();
        assert_eq!(e.status, CommandStatus::EsmeRinvmsglen);
        let e = read(&sm(0, 0, &[0x48, 0x80]).build(), Reading::default(), NOW).unwrap_err();
        assert_eq!(e.status, CommandStatus::EsmeRinvdcs);
    }

    #[test]
    fn message_payload_carries_long_text_but_not_beside_short_message() {
        let long = "x".repeat(400);
        let s = sm(0, 0, b"")
            .push_tlv(MessageSubmissionRequestTlvValue::MessagePayload(
                MessagePayload::new(AnyOctetString::from_slice(long.as_bytes())),
            ))
            .build();
        assert_eq!(whole(&s).1, long);
        let both = sm(0, 0, b"hi")
            .push_tlv(MessageSubmissionRequestTlvValue::MessagePayload(
                MessagePayload::new(AnyOctetString::from_slice(b"there")),
            ))
            .build();
        assert_eq!(
            read(&both, Reading::default(), NOW).unwrap_err().status,
            CommandStatus::EsmeRinvtlvval
        );
    }

    #[test]
    fn udh_parts_of_8_and_16_bit_reference_are_parts() {
        let mut p8 = vec![0x05, 0x00, 0x03, 0x2A, 0x02, 0x01];
        p8.extend_from_slice(b"Hello ");
        match read(&sm(0, 0x40, &p8).build(), Reading::default(), NOW).unwrap() {
            Submitted::Part(_, c, text) => {
                assert_eq!((c.reference, c.total, c.seq), (0x2A, 2, 1));
                assert_eq!(text, b"Hello ");
            }
            other => panic!("{other:?}"),
        }
        let mut p16 = vec![0x06, 0x08, 0x04, 0x12, 0x34, 0x03, 0x03];
        p16.extend_from_slice(b"end");
        match read(&sm(0, 0x40, &p16).build(), Reading::default(), NOW).unwrap() {
            Submitted::Part(_, c, _) => assert_eq!((c.reference, c.total, c.seq), (0x1234, 3, 3)),
            other => panic!("{other:?}"),
        }
        let e = read(&sm(0, 0x40, &[0x09, 0x00]).build(), Reading::default(), NOW).unwrap_err();
        assert_eq!(e.status, CommandStatus::EsmeRinvesmclass);
    }

    #[test]
    fn sar_tlvs_make_a_part_and_bad_ones_are_refused() {
        let part = |total: u8, seq: u8| {
            sm(0, 0, b"abc")
                .push_tlv(MessageSubmissionRequestTlvValue::SarMsgRefNum(7))
                .push_tlv(MessageSubmissionRequestTlvValue::SarTotalSegments(total))
                .push_tlv(MessageSubmissionRequestTlvValue::SarSegmentSeqnum(seq))
                .build()
        };
        match read(&part(2, 2), Reading::default(), NOW).unwrap() {
            Submitted::Part(_, c, _) => assert_eq!((c.reference, c.total, c.seq), (7, 2, 2)),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            read(&part(2, 3), Reading::default(), NOW)
                .unwrap_err()
                .status,
            CommandStatus::EsmeRinvtlvval
        );
        // A "concatenated" message of one part is a whole message.
        assert!(matches!(
            read(&part(1, 1), Reading::default(), NOW).unwrap(),
            Submitted::Whole(..)
        ));
    }

    #[test]
    fn receipt_request_and_times_are_read() {
        let t = |s: &str| EmptyOrFullCOctetString::from_string(s.into()).unwrap();
        let s = sm(0, 0, b"hi")
            .registered_delivery(RegisteredDelivery::request_all())
            .validity_period(t("000001000000000R"))
            .schedule_delivery_time(t("000000010000000R"))
            .build();
        let (env, _) = whole(&s);
        assert!(env.receipt);
        assert_eq!(env.expires_at, Some(NOW + 86_400_000));
        assert_eq!(env.deliver_at, Some(NOW + 3_600_000));
        let past = sm(0, 0, b"hi")
            .validity_period(t("010101000000000+"))
            .build();
        assert_eq!(
            read(&past, Reading::default(), NOW).unwrap_err().status,
            CommandStatus::EsmeRinvexpiry
        );
        let garbled = sm(0, 0, b"hi")
            .schedule_delivery_time(t("0000000100000000"))
            .build();
        assert_eq!(
            read(&garbled, Reading::default(), NOW).unwrap_err().status,
            CommandStatus::EsmeRinvsched
        );
    }

    #[test]
    fn national_numbers_keep_their_form_when_the_gateway_has_a_default_country() {
        let s = SubmitSm::builder()
            .source_addr(COctetString::from_string("447700900001".into()).unwrap())
            .destination_addr(COctetString::from_string("07700900123".into()).unwrap())
            .dest_addr_ton(Ton::National)
            .short_message(OctetString::from_slice(b"hi").unwrap())
            .build();
        let Submitted::Whole(env, _) = read(
            &s,
            Reading {
                national_default: true,
                ..Reading::default()
            },
            NOW,
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(
            (env.from.as_str(), env.to.as_str()),
            ("447700900001", "07700900123")
        );
        let Submitted::Whole(env, _) = read(&s, Reading::default(), NOW).unwrap() else {
            panic!()
        };
        assert_eq!(env.from, "+447700900001", "unknown TON, no default country");
    }

    #[test]
    fn admission_codes_map_to_smpp_statuses() {
        let r = |code| Rejection {
            code,
            reason: String::new(),
        };
        assert_eq!(
            status_of(&r("invalid_destination")),
            CommandStatus::EsmeRinvdstadr
        );
        assert_eq!(
            status_of(&r("invalid_sender")),
            CommandStatus::EsmeRinvsrcadr
        );
        assert_eq!(
            status_of(&r("body_too_long")),
            CommandStatus::EsmeRinvmsglen
        );
        assert_eq!(
            status_of(&r("invalid_send_at")),
            CommandStatus::EsmeRinvsched
        );
        assert_eq!(
            status_of(&r("invalid_client")),
            CommandStatus::EsmeRsubmitfail
        );
    }
}
