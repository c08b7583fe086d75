//! The keyword handler: an MO that is a STOP or START becomes a record on the opt-out
//! log; STOP, START and HELP get their configured reply, written to the ingest topic as
//! an ordinary message from the gateway itself ([`SYSTEM_CLIENT`]), which the opt-out
//! it confirms does not block. Replies have a deterministic idempotency key, so a
//! redelivered MO never sends a second one.

use crate::config::Config;
use crate::keywords::Keyword;
use crate::metrics::Metrics;
use smsgw_codec::{AvroRecord, InboundMessage, OptOutChanged, SubmitRequest, SYSTEM_CLIENT};
use smsgw_kafka::{HandleError, Handler, Incoming, OutRecord, Topics};

/// What one MO leads to. Pure.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The keyword, if it was one.
    pub keyword: Option<Keyword>,
    /// The opt-out log change.
    pub change: Option<OptOutChanged>,
    /// The reply to send.
    pub reply: Option<SubmitRequest>,
}

/// What an MO means. Pure.
pub fn interpret(m: &InboundMessage, config: &Config, now_ms: i64) -> Result<Outcome, String> {
    let profile = config.resolve(&m.to)?;
    let Some(keyword) = profile.keywords.classify(&m.body) else {
        return Ok(Outcome {
            keyword: None,
            change: None,
            reply: None,
        });
    };
    let change = match keyword {
        Keyword::Stop | Keyword::Start => Some(OptOutChanged {
            scope: profile.scope.clone(),
            number: m.from.clone(),
            opted_out: keyword == Keyword::Stop,
            source: "keyword".into(),
            changed_at: now_ms,
            actor: Some(format!("mo:{}", m.carrier)),
            reference: Some(m.inbound_id.clone()),
        }),
        Keyword::Help => None,
    };
    let text = match keyword {
        Keyword::Stop => profile.stop_reply,
        Keyword::Start => profile.start_reply,
        Keyword::Help => profile.help_reply,
    };
    let reply = text.map(|body| SubmitRequest {
        client_id: SYSTEM_CLIENT.into(),
        to: m.from.clone(),
        from: crate::config::sender_id(&m.to).to_string(),
        body,
        idempotency_key: Some(format!("reply:{}", m.inbound_id)),
        client_ref: Some(format!("{}-reply", keyword.as_str())),
        message_id: None,
        registered_delivery: None,
        validity_period_s: None,
        schedule_delivery_at: None,
        callback_url: None,
        message_type: None,
        send_at: None,
    });
    Ok(Outcome {
        keyword: Some(keyword),
        change,
        reply,
    })
}

/// The MO of an inbound record; a record without one is dead-lettered.
pub fn decode_inbound(input: &Incoming<'_>) -> Result<InboundMessage, HandleError> {
    let payload = input
        .payload
        .ok_or_else(|| HandleError::DeadLetter("inbound record has no value".into()))?;
    InboundMessage::decode(payload)
        .map_err(|e| HandleError::DeadLetter(format!("undecodable inbound message: {e}")))
}

/// Consumes the inbound topic.
pub struct KeywordHandler {
    /// Settings.
    pub config: Config,
    /// Topic names.
    pub topics: Topics,
    /// Metrics.
    pub metrics: Metrics,
}

impl Handler for KeywordHandler {
    async fn handle(
        &mut self,
        input: &Incoming<'_>,
        now_ms: i64,
    ) -> Result<Vec<OutRecord>, HandleError> {
        let m = decode_inbound(input)?;
        let out = interpret(&m, &self.config, now_ms).map_err(HandleError::DeadLetter)?;
        let Some(keyword) = out.keyword else {
            return Err(HandleError::Drop("not a keyword"));
        };
        self.metrics
            .keywords
            .with_label_values(&[keyword.as_str()])
            .inc();
        let mut records = Vec::new();
        if let Some(change) = out.change {
            // The opt-out lands before its confirmation is even requested.
            tracing::info!(number = %smsgw_runtime::mask_number(&change.number), scope = %change.scope, keyword = keyword.as_str(), "opt-out log updated");
            let kind = if change.opted_out {
                "opt_out"
            } else {
                "opt_in"
            };
            self.metrics
                .changes
                .with_label_values(&[kind, "keyword"])
                .inc();
            records.push(
                OutRecord::avro(self.topics.optout(), change.key(), &change)
                    .map_err(|e| HandleError::DeadLetter(e.to_string()))?,
            );
        }
        if let Some(reply) = out.reply {
            self.metrics
                .replies
                .with_label_values(&[keyword.as_str()])
                .inc();
            let key = reply.idempotency_key.clone().unwrap_or_default();
            records.push(
                OutRecord::avro(self.topics.replies(), key, &reply)
                    .map_err(|e| HandleError::DeadLetter(e.to_string()))?,
            );
        }
        Ok(records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smsgw_kafka::KafkaConfig;

    fn mo(body: &str) -> InboundMessage {
        InboundMessage {
            inbound_id: "i1".into(),
            carrier: "alpha".into(),
            from: "+447911123456".into(),
            to: "447700900000".into(),
            body: body.into(),
            received_at: 0,
        }
    }

    fn config() -> Config {
        let mut c = Config::new(KafkaConfig::new("x:1"));
        c.defaults.stop_reply = Some("Unsubscribed from {sender}.".into());
        c.defaults.help_reply = Some("Reply STOP to opt out.".into());
        c
    }

    #[test]
    fn given_a_stop_then_an_opt_out_with_its_audit_and_a_confirmation() {
        let o = interpret(&mo("Stop."), &config(), 7).unwrap();
        assert_eq!(o.keyword, Some(Keyword::Stop));
        let c = o.change.unwrap();
        assert!(c.opted_out);
        assert_eq!(c.key(), "sender:447700900000|+447911123456");
        assert_eq!(
            (
                c.source.as_str(),
                c.actor.as_deref(),
                c.reference.as_deref(),
                c.changed_at
            ),
            ("keyword", Some("mo:alpha"), Some("i1"), 7)
        );
        let r = o.reply.unwrap();
        assert_eq!(r.client_id, SYSTEM_CLIENT);
        assert_eq!(
            (r.to.as_str(), r.from.as_str()),
            ("+447911123456", "447700900000")
        );
        assert_eq!(r.body, "Unsubscribed from 447700900000.");
        assert_eq!(r.idempotency_key.as_deref(), Some("reply:i1"));
    }

    #[test]
    fn given_start_help_or_chatter() {
        let c = config();
        let start = interpret(&mo("yes"), &c, 1).unwrap();
        assert!(!start.change.unwrap().opted_out);
        assert_eq!(start.reply, None, "no start reply configured");
        let help = interpret(&mo("HELP"), &c, 1).unwrap();
        assert_eq!(help.change, None);
        assert_eq!(help.reply.unwrap().body, "Reply STOP to opt out.");
        let chat = interpret(&mo("don't stop me now"), &c, 1).unwrap();
        assert_eq!((chat.keyword, chat.change, chat.reply), (None, None, None));
    }

    #[test]
    fn global_scope() {
        let mut c = config();
        c.defaults.scope = Some(crate::config::Scope::Global);
        let o = interpret(&mo("STOP"), &c, 1).unwrap();
        assert_eq!(o.change.unwrap().scope, "global");
    }
}
