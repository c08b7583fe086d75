//! smsgw optout: keeps the opt-out log.
//!
//! Data flow: the service consumes the inbound (MO) topic. A message whose whole body is
//! a stop word (`STOP` by default; case and surrounding blanks ignored) becomes an
//! `OptOutChanged { opted_out: true }` record on the opt-out log, keyed by
//! `<scope>|<number>`; a start word (`START`) becomes `opted_out: false`. The scope is
//! the number the MO was sent to (`sender:<id>`) or `global`, by config. The router tails
//! the opt-out log and never routes to an opted-out recipient.

pub mod metrics;

use serde::Deserialize;
use smsgw_codec::{sender_scope, AvroRecord, InboundMessage, OptOutChanged, GLOBAL_SCOPE};
use smsgw_kafka::rdkafka::consumer::Consumer;
use smsgw_kafka::{
    consumer, run_consumer, HandleError, Handler, Incoming, KafkaConfig, KafkaError, OutRecord,
    Producer, Topics,
};
use smsgw_runtime::Shutdown;
use std::future::Future;
use std::net::SocketAddr;
use thiserror::Error;

/// Everything optout needs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Brokers, client properties and topic names.
    pub kafka: KafkaConfig,
    /// Address of `/metrics` and `/healthz`.
    #[serde(default = "default_admin")]
    pub admin_listen: SocketAddr,
    /// Consumer group on the inbound topic.
    #[serde(default = "default_group")]
    pub group_id: String,
    /// `sender`: a STOP applies to the number it was sent to; `global`: to every sender.
    #[serde(default)]
    pub scope: Scope,
    /// Bodies that opt out (compared upper-cased and trimmed).
    #[serde(default = "default_stop")]
    pub stop_words: Vec<String>,
    /// Bodies that opt back in.
    #[serde(default = "default_start")]
    pub start_words: Vec<String>,
}

/// Which senders a STOP applies to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Only the number or short code the STOP was sent to.
    #[default]
    Sender,
    /// Every sender.
    Global,
}

fn default_admin() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9104))
}
fn default_group() -> String {
    "smsgw-optout".into()
}
fn default_stop() -> Vec<String> {
    vec!["STOP".into()]
}
fn default_start() -> Vec<String> {
    vec!["START".into()]
}

impl Config {
    /// A config with defaults.
    pub fn new(kafka: KafkaConfig) -> Self {
        Config {
            kafka,
            admin_listen: default_admin(),
            group_id: default_group(),
            scope: Scope::Sender,
            stop_words: default_stop(),
            start_words: default_start(),
        }
    }

    /// Fails fast on values that cannot work.
    pub fn validate(&self) -> Result<(), String> {
        self.kafka.validate()?;
        let upper = |v: &[String]| {
            v.iter()
                .map(|w| w.trim().to_uppercase())
                .collect::<Vec<_>>()
        };
        let (stop, start) = (upper(&self.stop_words), upper(&self.start_words));
        if stop.is_empty() || stop.iter().chain(&start).any(String::is_empty) {
            return Err("stop_words must be non-empty and no word may be blank".into());
        }
        if stop.iter().any(|w| start.contains(w)) {
            return Err("a word cannot be both a stop and a start word".into());
        }
        Ok(())
    }
}

/// Why optout stopped.
#[derive(Debug, Error)]
pub enum OptOutError {
    /// Invalid configuration.
    #[error("config: {0}")]
    Config(String),
    /// Kafka failed beyond what the loop rides out.
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// The admin endpoint could not start.
    #[error(transparent)]
    Runtime(#[from] smsgw_runtime::RuntimeError),
}

/// What an inbound message means for the opt-out log. Pure.
pub fn interpret(m: &InboundMessage, config: &Config, now_ms: i64) -> Option<OptOutChanged> {
    let word = m.body.trim().to_uppercase();
    let is = |words: &[String]| words.iter().any(|w| w.trim().to_uppercase() == word);
    let opted_out = if is(&config.stop_words) {
        true
    } else if is(&config.start_words) {
        false
    } else {
        return None;
    };
    let scope = match config.scope {
        Scope::Global => GLOBAL_SCOPE.to_string(),
        Scope::Sender => sender_scope(&m.to),
    };
    Some(OptOutChanged {
        scope,
        number: m.from.clone(),
        opted_out,
        source: format!("mo:{}", m.inbound_id),
        changed_at: now_ms,
    })
}

struct OptOutHandler {
    config: Config,
    topics: Topics,
    metrics: metrics::Metrics,
}

impl Handler for OptOutHandler {
    async fn handle(
        &mut self,
        input: &Incoming<'_>,
        now_ms: i64,
    ) -> Result<Vec<OutRecord>, HandleError> {
        let payload = input
            .payload
            .ok_or_else(|| HandleError::DeadLetter("inbound record has no value".into()))?;
        let m = InboundMessage::decode(payload)
            .map_err(|e| HandleError::DeadLetter(format!("undecodable inbound message: {e}")))?;
        let Some(change) = interpret(&m, &self.config, now_ms) else {
            return Ok(vec![]);
        };
        let kind = if change.opted_out {
            "opt_out"
        } else {
            "opt_in"
        };
        self.metrics.changes.with_label_values(&[kind]).inc();
        tracing::info!(number = %smsgw_runtime::mask_number(&change.number), scope = %change.scope, kind, "opt-out log updated");
        let rec = OutRecord::avro(self.topics.optout(), change.key(), &change)
            .map_err(|e| HandleError::DeadLetter(e.to_string()))?;
        Ok(vec![rec])
    }
}

/// Runs optout until `shutdown` resolves.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), OptOutError> {
    config.validate().map_err(OptOutError::Config)?;
    let shutdown = Shutdown::new(shutdown);
    let metrics = metrics::Metrics::new();
    let admin = smsgw_runtime::serve_admin(
        config.admin_listen,
        metrics.registry.clone(),
        shutdown.clone().wait(),
    )
    .await?;
    let producer = Producer::new(&config.kafka)?;
    let consumer = consumer(&config.kafka, &config.group_id)?;
    consumer
        .subscribe(&[&config.kafka.topics.inbound()])
        .map_err(KafkaError::from)?;
    let topics = config.kafka.topics.clone();
    let dlq = topics.dead_letter();
    let mut handler = OptOutHandler {
        config,
        topics,
        metrics: metrics.clone(),
    };
    let r = run_consumer(
        &consumer,
        &producer,
        &dlq,
        "optout",
        &mut handler,
        &metrics.consumer,
        1_000,
        shutdown.wait(),
    )
    .await;
    let _ = admin.await;
    Ok(r?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mo(body: &str) -> InboundMessage {
        InboundMessage {
            inbound_id: "i1".into(),
            carrier: "a".into(),
            from: "+447911123456".into(),
            to: "447700900000".into(),
            body: body.into(),
            received_at: 0,
        }
    }

    fn config() -> Config {
        Config::new(KafkaConfig::new("x:1"))
    }

    #[test]
    fn stop_and_start_are_whole_message_and_case_insensitive() {
        let c = config();
        let o = interpret(&mo("  stop \n"), &c, 1).unwrap();
        assert!(o.opted_out);
        assert_eq!(o.key(), "sender:447700900000|+447911123456");
        assert!(!interpret(&mo("Start"), &c, 1).unwrap().opted_out);
        assert_eq!(interpret(&mo("please stop"), &c, 1), None);
        assert_eq!(interpret(&mo("STOPP"), &c, 1), None);
    }

    #[test]
    fn global_scope() {
        let mut c = config();
        c.scope = Scope::Global;
        assert_eq!(interpret(&mo("STOP"), &c, 1).unwrap().scope, "global");
    }

    #[test]
    fn conflicting_words_fail_validation() {
        let mut c = config();
        c.start_words = vec!["stop".into()];
        assert!(c.validate().is_err());
    }
}
