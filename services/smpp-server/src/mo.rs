//! Inbound (MO) messages to the customer: a message a handset sends to one of an
//! account's numbers (or sender ids) goes to the account's sessions.
//!
//! Data flow: the dispatcher writes every MO, long ones already joined, to
//! `smsgw.inbound`. [`MoRouter`] reads it (group `mo_group_id`) and writes each message
//! whose `to` is an account's number to that account's topic, beside its receipts; the
//! account's receipt task ([`crate::receipts`]) sends it as `deliver_sm`, in UDH parts
//! when long, with the same guarantees (in order, held while nobody is bound, resent
//! until answered). Messages to numbers no account has are left to the other readers
//! of `smsgw.inbound` (the opt-out service).

use crate::accounts::Accounts;
use rusmpp::pdus::DeliverSm;
use rusmpp::types::OctetString;
use rusmpp::values::{DataCoding, EsmClass};
use smsgw_codec::{AvroRecord, InboundMessage, SmppMo};
use smsgw_gsm::{Encoding, LongMode};
use smsgw_kafka::{HandleError, Handler, Incoming, OutRecord, Topics};
use std::sync::Arc;

/// What an inbound message becomes: the account's MO record, if a number is its.
pub fn route(accounts: &Accounts, m: &InboundMessage) -> Option<SmppMo> {
    let a = accounts.owner_of_number(&m.to)?;
    Some(SmppMo {
        inbound_id: m.inbound_id.clone(),
        system_id: a.system_id.clone(),
        from: m.from.clone(),
        to: m.to.clone(),
        body: m.body.clone(),
        received_at: m.received_at,
    })
}

/// The `deliver_sm` PDUs of an MO: GSM-7 where the text allows, else UCS-2; one PDU, or
/// concatenated parts with an 8-bit-reference UDH when long.
pub fn mo_pdus(m: &SmppMo) -> Result<Vec<DeliverSm>, String> {
    let encoding = smsgw_gsm::analyse(&m.body).encoding;
    let reference = m
        .inbound_id
        .bytes()
        .fold(0u16, |h, b| h.wrapping_mul(31).wrapping_add(u16::from(b)));
    let parts = smsgw_gsm::parts(&m.body, encoding, LongMode::Udh8, reference)?;
    let (src_ton, src_npi, source) = crate::receipts::pdu_address(&m.from);
    let (dst_ton, dst_npi, dest) = crate::receipts::pdu_address(&m.to);
    let dc = match encoding {
        Encoding::Ucs2 => 0x08,
        _ => 0x00,
    };
    parts
        .into_iter()
        .map(|p| {
            Ok(DeliverSm::builder()
                .source_addr_ton(src_ton)
                .source_addr_npi(src_npi)
                .source_addr(source.clone())
                .dest_addr_ton(dst_ton)
                .dest_addr_npi(dst_npi)
                .destination_addr(dest.clone())
                .esm_class(EsmClass::from(if p.udhi { 0x40 } else { 0x00 }))
                .data_coding(DataCoding::from(dc))
                .short_message(
                    OctetString::from_slice(&p.octets).map_err(|e| format!("part: {e}"))?,
                )
                .build())
        })
        .collect()
}

/// Routes `smsgw.inbound` to the accounts' topics.
pub struct MoRouter {
    /// The accounts and their numbers.
    pub accounts: Arc<Accounts>,
    /// Topic names.
    pub topics: Topics,
}

impl Handler for MoRouter {
    async fn handle(
        &mut self,
        input: &Incoming<'_>,
        _now_ms: i64,
    ) -> Result<Vec<OutRecord>, HandleError> {
        let m = InboundMessage::decode(input.payload.unwrap_or_default())
            .map_err(|e| HandleError::DeadLetter(format!("undecodable inbound message: {e}")))?;
        let Some(mo) = route(&self.accounts, &m) else {
            return Err(HandleError::Drop("not_an_account_number"));
        };
        let topic = self.topics.smpp_receipts(&mo.system_id);
        OutRecord::avro(topic, mo.inbound_id.clone(), &mo)
            .map(|r| vec![r])
            .map_err(|e| HandleError::DeadLetter(format!("MO cannot be encoded: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts::{hash_password, MIN_ITERATIONS};

    fn accounts() -> Accounts {
        let line = format!(
            "shop:{}:numbers=+447700900001",
            hash_password("pw", b"saltsalt", MIN_ITERATIONS)
        );
        Accounts::parse(&line, 1.0).unwrap()
    }

    fn inbound(to: &str, body: &str) -> InboundMessage {
        InboundMessage {
            inbound_id: "in-1".into(),
            carrier: "c".into(),
            from: "+447911123456".into(),
            to: to.into(),
            body: body.into(),
            received_at: 5,
        }
    }

    #[test]
    fn an_mo_to_an_accounts_number_is_its_and_others_are_not() {
        let a = accounts();
        let mo = route(&a, &inbound("447700900001", "hi")).unwrap();
        assert_eq!((mo.system_id.as_str(), mo.body.as_str()), ("shop", "hi"));
        assert!(route(&a, &inbound("447700900009", "hi")).is_none());
    }

    #[test]
    fn a_long_or_unicode_mo_is_sent_in_parts_that_join_back() {
        let a = accounts();
        let long = "Reply from the handset. ".repeat(10);
        let pdus = mo_pdus(&route(&a, &inbound("447700900001", &long)).unwrap()).unwrap();
        assert_eq!(pdus.len(), 2);
        let mut joined = Vec::new();
        for p in &pdus {
            assert_eq!(u8::from(p.esm_class), 0x40);
            let (c, rest) = smsgw_gsm::read_udh(p.short_message().as_ref()).unwrap();
            assert_eq!(c.map(|c| c.total), Some(2));
            joined.extend_from_slice(rest);
        }
        assert_eq!(smsgw_gsm::decode(&joined, 0).unwrap(), long);
        let one = mo_pdus(&route(&a, &inbound("447700900001", "Привет")).unwrap()).unwrap();
        assert_eq!((one.len(), u8::from(one[0].data_coding)), (1, 0x08));
        assert_eq!(one[0].source_addr.as_str(), "447911123456");
    }
}
