//! Kafka client configuration and topic names.

use rdkafka::ClientConfig;
use serde::Deserialize;
use std::collections::BTreeMap;

/// How to reach the brokers. Shared by every service's config under `[kafka]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port[,host:port]`.
    pub brokers: String,
    /// Any librdkafka property (`security.protocol`, `sasl.mechanism`, `ssl.ca.location`,
    /// `acks`, `linger.ms`, ...). Applied last, so it overrides smsgw's defaults.
    /// `_` in a name reads as `.` (no librdkafka property has `_`), so environment
    /// overrides can set them: `SMSGW_KAFKA__PROPERTIES__SASL_MECHANISM=PLAIN`.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// Topic names.
    #[serde(default)]
    pub topics: Topics,
    /// How a service's consumers get partitions: `group` (Kafka's group protocol; run
    /// several instances and they share the partitions) or `static` (each consumer
    /// takes every partition of its topics and resumes from the group's committed
    /// offsets, without group membership: one instance per service). `static` is for
    /// brokers whose group coordinator cannot replace a member that died without
    /// leaving: Tansu 0.6 never hands a killed member's partitions to anyone
    /// (docs/operations.md, "Scaling out"). With `static`, several instances share the
    /// partitions by [`Self::instance`] and [`Self::instances`].
    #[serde(default)]
    pub assignment: Assignment,
    /// How many instances of this service run (the replica count). With `static`,
    /// instance `i` owns the partitions `p` with `p % instances == i` of every topic it
    /// consumes; with `group` the broker decides, and the count is used only to share a
    /// carrier's fleet-wide limits (binds, `max_rate`) among the dispatchers. Default 1.
    #[serde(default = "one")]
    pub instances: u32,
    /// This instance's number, `0..instances`. It must be stable across restarts (a
    /// StatefulSet ordinal: the chart sets `SMSGW_KAFKA__INSTANCE` from the pod index),
    /// since it says which partitions, held messages and carrier status are this
    /// instance's. Default 0.
    #[serde(default)]
    pub instance: u32,
}

fn one() -> u32 {
    1
}

/// The instance (of `instances`) that owns `partition` under `static` assignment.
pub fn owner_of(partition: i32, instances: u32) -> u32 {
    (partition.max(0) as u32) % instances.max(1)
}

/// See [`KafkaConfig::assignment`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Assignment {
    /// The consumer-group protocol.
    #[default]
    Group,
    /// Every partition, committed offsets, no membership.
    Static,
}

impl KafkaConfig {
    /// A config for `brokers` with default topics and no extra properties.
    pub fn new(brokers: impl Into<String>) -> Self {
        KafkaConfig {
            brokers: brokers.into(),
            properties: BTreeMap::new(),
            topics: Topics::default(),
            assignment: Assignment::default(),
            instances: 1,
            instance: 0,
        }
    }

    /// Whether this instance owns `partition` under `static` assignment. Pure: the
    /// same answer on every instance, so each partition has exactly one owner.
    pub fn owns_partition(&self, partition: i32) -> bool {
        owner_of(partition, self.instances) == self.instance
    }

    /// A librdkafka client config with smsgw's defaults, then `properties` on top.
    pub fn client_config(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        for (k, v) in defaults {
            c.set(*k, *v);
        }
        for (k, v) in &self.properties {
            c.set(k.replace('_', "."), v);
        }
        c
    }

    /// Fails fast on values that cannot work.
    pub fn validate(&self) -> Result<(), String> {
        if self.brokers.trim().is_empty() {
            return Err("kafka.brokers is empty".into());
        }
        if self.instances == 0 || self.instance >= self.instances {
            return Err(format!(
                "kafka.instance {} must be below kafka.instances {} (at least 1)",
                self.instance, self.instances
            ));
        }
        self.topics.validate()
    }
}

/// Topic names. Every name is `<prefix>.<suffix>`; tests use a unique prefix each.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topics {
    /// Prefix of every topic name.
    #[serde(default = "default_prefix")]
    pub prefix: String,
}

fn default_prefix() -> String {
    "smsgw".into()
}

impl Default for Topics {
    fn default() -> Self {
        Topics {
            prefix: default_prefix(),
        }
    }
}

impl Topics {
    /// With a given prefix.
    pub fn with_prefix(prefix: impl Into<String>) -> Self {
        Topics {
            prefix: prefix.into(),
        }
    }
    fn name(&self, suffix: &str) -> String {
        format!("{}.{suffix}", self.prefix)
    }
    /// Requests from upstream producers and the HTTP API.
    pub fn ingest(&self) -> String {
        self.name("ingest")
    }
    /// The gateway's own messages (opt-out replies), written only by the optout service
    /// and read by ingest: the one topic where the gateway's client id is accepted, so
    /// that no producer on the public ingest topic can claim it. In production a broker
    /// ACL gives write access to the optout service's principal alone.
    pub fn replies(&self) -> String {
        self.name("replies")
    }
    /// The message event log.
    pub fn events(&self) -> String {
        self.name("events")
    }
    /// Dispatch work for one carrier.
    pub fn dispatch(&self, carrier: &str) -> String {
        self.name(&format!("dispatch.{carrier}"))
    }
    /// Raw receipts and submit correlations.
    pub fn receipts(&self) -> String {
        self.name("receipts")
    }
    /// Mobile-originated messages.
    pub fn inbound(&self) -> String {
        self.name("inbound")
    }
    /// The opt-out log.
    pub fn optout(&self) -> String {
        self.name("optout")
    }
    /// Dead letters.
    pub fn dead_letter(&self) -> String {
        self.name("deadletter")
    }
    /// Carrier link status.
    pub fn carrier_status(&self) -> String {
        self.name("carrier-status")
    }
    /// Cancellation requests (compacted, key: message id).
    pub fn cancellations(&self) -> String {
        self.name("cancellations")
    }
    /// Messages held until their `send_at` (compacted, key: message id; the value is
    /// the `MessageAccepted` event, a tombstone once released).
    pub fn schedule(&self) -> String {
        self.name("schedule")
    }
    /// Status callbacks already made (compacted, key: message id).
    pub fn callbacks(&self) -> String {
        self.name("callbacks")
    }
    /// Delivery receipts owed to one SMPP account (one partition, so they stay in order).
    pub fn smpp_receipts(&self, system_id: &str) -> String {
        self.name(&format!("smpp.receipts.{system_id}"))
    }

    fn validate(&self) -> Result<(), String> {
        let ok = !self.prefix.is_empty()
            && self
                .prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        if ok {
            Ok(())
        } else {
            Err(format!(
                "kafka.topics.prefix {:?} must be non-empty [A-Za-z0-9._-]",
                self.prefix
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_override_defaults_and_underscores_read_as_dots() {
        let mut k = KafkaConfig::new("b:1");
        k.properties.insert("acks".into(), "1".into());
        k.properties.insert("sasl_mechanism".into(), "PLAIN".into());
        let c = k.client_config(&[("acks", "all")]);
        assert_eq!(c.get("acks"), Some("1"));
        assert_eq!(c.get("sasl.mechanism"), Some("PLAIN"));
        assert_eq!(c.get("bootstrap.servers"), Some("b:1"));
    }

    #[test]
    fn every_partition_has_exactly_one_owner_among_the_instances() {
        for instances in 1..=5u32 {
            for p in 0..12 {
                let owners: Vec<u32> = (0..instances)
                    .filter(|&i| {
                        let mut k = KafkaConfig::new("b:1");
                        (k.instances, k.instance) = (instances, i);
                        k.owns_partition(p)
                    })
                    .collect();
                assert_eq!(
                    owners,
                    [owner_of(p, instances)],
                    "partition {p} of {instances}"
                );
            }
        }
    }

    #[test]
    fn an_instance_number_outside_the_fleet_is_refused() {
        let mut k = KafkaConfig::new("b:1");
        (k.instances, k.instance) = (2, 2);
        assert!(k.validate().unwrap_err().contains("kafka.instance 2"));
        (k.instances, k.instance) = (0, 0);
        assert!(k.validate().is_err());
        (k.instances, k.instance) = (2, 1);
        assert!(k.validate().is_ok());
    }
}
