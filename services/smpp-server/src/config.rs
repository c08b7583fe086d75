//! SMPP server configuration.

use serde::Deserialize;
use smsgw_admission::Limits;
use smsgw_kafka::KafkaConfig;
use std::net::SocketAddr;

/// Everything the SMPP server needs. Loaded from TOML with `SMSGW_` environment
/// overrides.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Brokers, client properties and topic names.
    pub kafka: KafkaConfig,
    /// Where ESMEs connect.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Address of `/metrics`, `/healthz` and `/readyz`.
    #[serde(default = "default_admin")]
    pub admin_listen: SocketAddr,
    /// The accounts, one per line (see `accounts.rs`; `smsgw-smpp-server hash-password`
    /// prints a line). Usually injected from a Secret as `SMSGW_ACCOUNTS`. Required: the
    /// server has no open mode.
    #[serde(default)]
    pub accounts: Option<String>,
    /// Messages each account (client id) may send over SMPP per UTC day; accounts not
    /// listed have no quota. Past it: `ESME_RTHROTTLED`. Each replica enforces its share
    /// (`quota / kafka.instances`), as ingest does for the HTTP API.
    #[serde(default)]
    pub daily_quotas: std::collections::BTreeMap<String, u64>,
    /// Messages per second of an account whose line sets no `rate`, fleet-wide.
    #[serde(default = "default_rate")]
    pub default_rate: f64,
    /// The `system_id` the server answers binds with.
    #[serde(default = "default_system_id")]
    pub system_id: String,
    /// Validation limits, as ingest applies them.
    #[serde(default)]
    pub limits: Limits,
    /// Country (ISO 3166 alpha-2) of numbers sent without their country code; `None`:
    /// a number with an unknown TON is read as international.
    #[serde(default)]
    pub default_country: Option<String>,
    /// Connections at once on this replica; more are closed at once.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Submits of one session awaiting the broker at once; past it the server stops
    /// reading that session until one is answered (TCP pushes back on the ESME).
    #[serde(default = "default_window")]
    pub window: usize,
    /// Largest PDU accepted, in bytes; a longer `command_length` closes the session.
    #[serde(default = "default_max_pdu")]
    pub max_pdu_bytes: usize,
    /// A connection that has not bound this long after connecting is closed (ms).
    #[serde(default = "default_bind_timeout")]
    pub bind_timeout_ms: u64,
    /// A bound session silent this long is unbound and closed (ms).
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_ms: u64,
    /// After this much silence the server sends `enquire_link` (ms).
    #[serde(default = "default_enquire_link")]
    pub enquire_link_ms: u64,
    /// How long the ESME has to answer a PDU the server sent (ms).
    #[serde(default = "default_response_timeout")]
    pub response_timeout_ms: u64,
    /// Incomplete concatenated messages one session may hold.
    #[serde(default = "default_max_partial")]
    pub max_partial_messages: usize,
    /// An incomplete concatenated message is given up this long after its first part
    /// (ms); what arrived goes to the dead-letter topic.
    #[serde(default = "default_reassembly_timeout")]
    pub reassembly_timeout_ms: u64,
    /// Garbage PDUs one session may send before it is closed.
    #[serde(default = "default_max_garbage")]
    pub max_garbage_pdus: u32,
    /// Receipts one account has awaiting `deliver_sm_resp` at once (sent in order).
    #[serde(default = "default_receipt_window")]
    pub receipt_window: usize,
    /// Consumer group prefix of the receipt readers: one group per account,
    /// `<prefix>.<system_id>`, shared by the replicas.
    #[serde(default = "default_receipt_group")]
    pub receipt_group_prefix: String,
    /// SMPP messages whose state `query_sm` and `cancel_sm` can see (the most recent;
    /// about 100 bytes each).
    #[serde(default = "default_status_capacity")]
    pub status_capacity: usize,
    /// Consumer group of the MO router on `smsgw.inbound`.
    #[serde(default = "default_mo_group")]
    pub mo_group_id: String,
    /// Replication factor of the accounts' receipt topics, which the server creates at
    /// start when missing (one partition each, kept `receipt_retention_ms`).
    #[serde(default = "default_replication")]
    pub receipt_topic_replication: i32,
    /// How long an account's receipts wait on Kafka for a session to take them (ms).
    #[serde(default = "default_receipt_retention")]
    pub receipt_retention_ms: i64,
    /// Password checks running at once (each is a deliberate ~50 ms of CPU), so a bind
    /// flood cannot take every core.
    #[serde(default = "default_auth_concurrency")]
    pub auth_concurrency: usize,
}

impl Config {
    /// A config with every default, for `kafka` and these `accounts` (tests, tools).
    pub fn new(kafka: KafkaConfig, accounts: impl Into<String>) -> Self {
        Config {
            kafka,
            listen: default_listen(),
            admin_listen: default_admin(),
            accounts: Some(accounts.into()),
            daily_quotas: Default::default(),
            default_rate: default_rate(),
            system_id: default_system_id(),
            limits: Limits::default(),
            default_country: None,
            max_connections: default_max_connections(),
            window: default_window(),
            max_pdu_bytes: default_max_pdu(),
            bind_timeout_ms: default_bind_timeout(),
            idle_timeout_ms: default_idle_timeout(),
            enquire_link_ms: default_enquire_link(),
            response_timeout_ms: default_response_timeout(),
            max_partial_messages: default_max_partial(),
            reassembly_timeout_ms: default_reassembly_timeout(),
            max_garbage_pdus: default_max_garbage(),
            auth_concurrency: default_auth_concurrency(),
            receipt_window: default_receipt_window(),
            mo_group_id: default_mo_group(),
            status_capacity: default_status_capacity(),
            receipt_topic_replication: default_replication(),
            receipt_retention_ms: default_receipt_retention(),
            receipt_group_prefix: default_receipt_group(),
        }
    }

    /// The parsed accounts.
    pub fn accounts(&self) -> Result<crate::accounts::Accounts, String> {
        let text = self
            .accounts
            .as_deref()
            .ok_or("accounts is required (SMSGW_ACCOUNTS)")?;
        let accounts = crate::accounts::Accounts::parse(text, self.default_rate)?;
        if accounts.is_empty() {
            return Err("accounts lists no account".into());
        }
        Ok(accounts)
    }

    /// Checks everything that can be checked before starting.
    pub fn validate(&self) -> Result<(), String> {
        self.kafka.validate()?;
        self.accounts()?;
        if let Some(c) = &self.default_country {
            c.parse::<phonenumber::country::Id>()
                .map_err(|_| format!("default_country {c:?} is not a country code"))?;
        }
        if self.system_id.is_empty() || self.system_id.len() > crate::accounts::MAX_SYSTEM_ID {
            return Err("system_id must be 1 to 15 characters".into());
        }
        if !(self.default_rate.is_finite() && self.default_rate > 0.0) {
            return Err("default_rate must be > 0".into());
        }
        for (name, v) in [
            ("max_connections", self.max_connections),
            ("window", self.window),
            ("max_partial_messages", self.max_partial_messages),
            ("auth_concurrency", self.auth_concurrency),
            ("receipt_window", self.receipt_window),
            ("status_capacity", self.status_capacity),
        ] {
            if v == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        if self.kafka.assignment == smsgw_kafka::Assignment::Static && self.kafka.instances > 1 {
            return Err("with kafka.assignment = \"static\" the SMPP server runs as one replica: an account's receipts move between replicas only with Kafka's group protocol".into());
        }
        if !(256..=65_536).contains(&self.max_pdu_bytes) {
            return Err("max_pdu_bytes must be 256 to 65536".into());
        }
        if self.enquire_link_ms == 0 || self.idle_timeout_ms <= self.enquire_link_ms {
            return Err("idle_timeout_ms must be longer than enquire_link_ms (> 0)".into());
        }
        Ok(())
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 2775))
}
fn default_admin() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9105))
}
fn default_rate() -> f64 {
    100.0
}
fn default_system_id() -> String {
    "smsgw".into()
}
fn default_max_connections() -> usize {
    1_000
}
fn default_window() -> usize {
    64
}
fn default_max_pdu() -> usize {
    4_096
}
fn default_bind_timeout() -> u64 {
    10_000
}
fn default_idle_timeout() -> u64 {
    120_000
}
fn default_enquire_link() -> u64 {
    30_000
}
fn default_response_timeout() -> u64 {
    10_000
}
fn default_max_partial() -> usize {
    64
}
fn default_reassembly_timeout() -> u64 {
    60_000
}
fn default_max_garbage() -> u32 {
    10
}
fn default_auth_concurrency() -> usize {
    2
}
fn default_receipt_window() -> usize {
    10
}
fn default_receipt_group() -> String {
    "smsgw-smpp-receipts".into()
}
fn default_replication() -> i32 {
    1
}
fn default_receipt_retention() -> i64 {
    7 * 24 * 3600 * 1000
}
fn default_mo_group() -> String {
    "smsgw-smpp-mo".into()
}
fn default_status_capacity() -> usize {
    200_000
}
