//! Ingest configuration.

use serde::Deserialize;
pub use smsgw_admission::Limits;
use smsgw_kafka::KafkaConfig;
use std::net::SocketAddr;

/// Everything ingest needs. Loaded from TOML with `SMSGW_` environment overrides.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Brokers, client properties and topic names.
    pub kafka: KafkaConfig,
    /// Address of the HTTP API.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Address of `/metrics`, `/healthz` and `/readyz`: not the API's port, so probes and
    /// Prometheus reach them and the API's callers do not. The same address as `listen`
    /// serves both on one port.
    #[serde(default = "default_admin")]
    pub admin_listen: SocketAddr,
    /// Consumer group of the ingest-topic consumer.
    #[serde(default = "default_group")]
    pub group_id: String,
    /// Validation limits.
    #[serde(default)]
    pub limits: Limits,
    /// Country (ISO 3166 alpha-2, e.g. `GB`) for numbers given without `+`; `None`
    /// means every number must be international.
    #[serde(default)]
    pub default_country: Option<String>,
    /// Messages the status view keeps (the oldest are evicted first). Each costs about
    /// 1.5 KB of memory (its events as stored on the log, measured by `make bench`), so
    /// the default 30,000 is ~45 MB, which keeps ingest under 100 MB with a full
    /// `dedupe_capacity`; raise it knowing that.
    #[serde(default = "default_view_capacity")]
    pub view_capacity: usize,
    /// Message ids remembered for idempotency (8 bytes each, ~25 bytes with the index's
    /// overhead: the default 1,000,000 is ~25 MB).
    #[serde(default = "default_dedupe_capacity")]
    pub dedupe_capacity: usize,
    /// Records awaiting broker acknowledgement at once.
    #[serde(default = "default_in_flight")]
    pub max_in_flight: usize,
    /// Messages each account (client id) may send through the HTTP API per UTC day;
    /// accounts not listed have no quota. Past it: 429 `quota_exceeded`. Each replica
    /// enforces its share (`quota / kafka.instances`); see `quota.rs`.
    #[serde(default)]
    pub daily_quotas: std::collections::BTreeMap<String, u64>,
    /// API keys of the HTTP API, one `name:sha256hex[:requests_per_second]` per line
    /// (`smsgw-admin hash-key` prints the hash). Usually injected from a Secret as
    /// `SMSGW_API_KEYS`. Required unless `auth = "disabled"`.
    #[serde(default)]
    pub api_keys: Option<String>,
    /// `keys` (the default): callers need an API key, and the service refuses to start
    /// without `api_keys`. `disabled`: the API is open to anyone who reaches it (demos
    /// and tests; never by accident).
    #[serde(default)]
    pub auth: smsgw_runtime::auth::AuthMode,
    /// Requests per second per key where its line sets none.
    #[serde(default = "default_rate")]
    pub api_rate_limit: f64,
}

impl Config {
    /// The parsed API keys (empty when none are configured).
    pub fn keys(&self) -> Result<smsgw_runtime::auth::ApiKeys, String> {
        smsgw_runtime::auth::ApiKeys::parse(
            self.api_keys.as_deref().unwrap_or(""),
            self.api_rate_limit,
        )
    }
}

fn default_rate() -> f64 {
    100.0
}

fn default_admin() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9100))
}
fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_group() -> String {
    "smsgw-ingest".into()
}
fn default_view_capacity() -> usize {
    30_000
}
fn default_dedupe_capacity() -> usize {
    1_000_000
}
fn default_in_flight() -> usize {
    2_000
}

impl Config {
    /// A config with defaults for everything but the brokers.
    pub fn new(kafka: KafkaConfig) -> Self {
        Config {
            kafka,
            listen: default_listen(),
            admin_listen: default_admin(),
            group_id: default_group(),
            limits: Limits::default(),
            default_country: None,
            view_capacity: default_view_capacity(),
            dedupe_capacity: default_dedupe_capacity(),
            max_in_flight: default_in_flight(),
            daily_quotas: Default::default(),
            api_keys: None,
            auth: smsgw_runtime::auth::AuthMode::default(),
            api_rate_limit: default_rate(),
        }
    }

    /// Fails fast on values that cannot work.
    pub fn validate(&self) -> Result<(), String> {
        self.kafka.validate()?;
        self.auth.check(&self.keys()?)?;
        if let Some(c) = &self.default_country {
            c.parse::<phonenumber::country::Id>()
                .map_err(|_| format!("default_country {c:?} is not a country code"))?;
        }
        if self
            .limits
            .default_validity_s
            .is_some_and(|d| d < 1 || d > self.limits.max_validity_s)
        {
            return Err("limits.default_validity_s must be 1 to limits.max_validity_s".into());
        }
        if self.limits.min_send_at_ahead_s < 0
            || self.limits.max_send_at_ahead_s < self.limits.min_send_at_ahead_s
        {
            return Err(
                "limits.min_send_at_ahead_s must be >= 0 and <= limits.max_send_at_ahead_s".into(),
            );
        }
        if self.limits.max_segments == 0
            || self.limits.max_body_chars == 0
            || self.limits.max_request_bytes == 0
        {
            return Err("limits must be positive".into());
        }
        if self.view_capacity == 0 || self.dedupe_capacity == 0 || self.max_in_flight == 0 {
            return Err("view_capacity, dedupe_capacity and max_in_flight must be positive".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_toml(text: &str) -> Config {
        use figment::providers::Format;
        figment::Figment::from(figment::providers::Toml::string(text))
            .extract()
            .unwrap()
    }

    #[test]
    fn given_no_api_keys_then_the_service_refuses_to_start_unless_auth_is_disabled() {
        let open_by_default = from_toml("[kafka]\nbrokers = \"k:9092\"\n");
        let err = open_by_default.validate().unwrap_err();
        assert!(err.contains("no api_keys"), "{err}");
        let disabled = from_toml("auth = \"disabled\"\n[kafka]\nbrokers = \"k:9092\"\n");
        assert!(disabled.validate().is_ok());
        let keyed = from_toml(&format!(
            "api_keys = \"shop:{}\"\n[kafka]\nbrokers = \"k:9092\"\n",
            smsgw_runtime::auth::hash_key("k-123")
        ));
        assert!(keyed.validate().is_ok());
        // Config::new, the code API, is as strict as a file.
        assert!(Config::new(KafkaConfig::new("k:9092")).validate().is_err());
    }
}
