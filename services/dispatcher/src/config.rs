//! Dispatcher configuration.

use serde::Deserialize;
use smsgw_kafka::KafkaConfig;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

/// Everything the dispatcher needs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Brokers, client properties and topic names.
    pub kafka: KafkaConfig,
    /// Address of `/metrics` and `/healthz`.
    #[serde(default = "default_admin")]
    pub admin_listen: SocketAddr,
    /// Address of the webhooks HTTP carriers call with receipts and MO
    /// (`/v1/carriers/{name}/receipts`, `/v1/carriers/{name}/mo`). Needed when a carrier
    /// has `http.webhook`.
    #[serde(default)]
    pub webhook_listen: Option<SocketAddr>,
    /// The carriers this dispatcher serves; each gets its own consumer and sessions.
    pub carriers: Vec<CarrierConfig>,
    /// How often the copy of the opt-out log catches up with the log (ms).
    #[serde(default = "default_optout_refresh")]
    pub optout_refresh_ms: u64,
    /// How stale that copy may be when a message is checked just before its first
    /// submit (ms): a STOP on the log this long blocks every later submit.
    #[serde(default = "default_optout_staleness")]
    pub optout_max_staleness_ms: u64,
    /// On startup, how much of the event log (ms) is re-read to find work that was
    /// recorded before a crash but not yet committed (skipped, not sent again). Must
    /// cover the consumer's commit interval and the time to record an outcome.
    #[serde(default = "default_restart_lookback")]
    pub restart_lookback_ms: i64,
    /// At shutdown, how long work already on the wire may take to finish (ms). Work not
    /// yet sent (waiting for the rate limit, a bind, or a retry after a throttle) is given
    /// up at once and left uncommitted for the next owner; submits awaiting an answer and
    /// multi-part messages already started get this long. Then the dispatcher stores
    /// what finished, unbinds and exits, whatever the backlog.
    #[serde(default = "default_drain_timeout")]
    pub drain_timeout_ms: u64,
}

fn default_drain_timeout() -> u64 {
    10_000
}

fn default_restart_lookback() -> i64 {
    120_000
}

/// One carrier: SMPP (`smpp://` or `smpps://` url) or HTTP (`http://` / `https://` url plus `http`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CarrierConfig {
    /// Name used in routes, topics and events.
    pub name: String,
    /// `smpp://host:port` for SMPP, `smpps://host:port` for SMPP over TLS (the server's
    /// certificate verified against the web PKI roots, or `tls_ca_file`), or the submit
    /// URL of an HTTP carrier, which may hold `{{placeholders}}` (see `http.body`).
    pub url: String,
    /// `smpps://`: PEM file of the CA certificates to trust instead of the web PKI roots
    /// (a carrier with a private CA).
    #[serde(default)]
    pub tls_ca_file: Option<String>,
    /// `smpps://`: the name the server's certificate must carry, when it is not the
    /// host of the URL (an IP address in the URL, a certificate for a DNS name).
    #[serde(default)]
    pub tls_server_name: Option<String>,
    /// HTTP carriers: the request template, auth, id extraction and webhooks.
    #[serde(default)]
    pub http: Option<crate::http::HttpConfig>,
    /// SMPP: bind `system_id`.
    #[serde(default)]
    pub system_id: String,
    /// SMPP: bind password (or `env:NAME`).
    #[serde(default)]
    pub password: String,
    /// Bind `system_type`.
    #[serde(default)]
    pub system_type: String,
    /// How the carrier is bound: `trx` (transceiver, default), `tx` (transmitter only: no
    /// receipts or MO), `rx` (receiver only: this carrier takes no submits) or `tx_rx` (a
    /// transmitter plus a separate receiver).
    #[serde(default)]
    pub bind_mode: BindMode,
    /// Sessions of `bind_mode` to hold open (for `tx_rx`, pairs). Submits are spread
    /// over them round-robin; each has its own `window`.
    #[serde(default = "one")]
    pub binds: usize,
    /// Most `submit_sm` awaiting a response at once, per bind.
    #[serde(default = "default_window")]
    pub window: usize,
    /// How long to wait for `submit_sm_resp` (ms). A timeout fails the attempt as
    /// *ambiguous*; the PDU is never resent blindly.
    #[serde(default = "default_response_timeout")]
    pub response_timeout_ms: u64,
    /// Interval of our `enquire_link` (ms).
    #[serde(default = "default_enquire")]
    pub enquire_link_ms: u64,
    /// First reconnect delay (ms); doubles up to `reconnect_max_ms`, with jitter.
    #[serde(default = "default_reconnect_min")]
    pub reconnect_min_ms: u64,
    /// Longest reconnect delay (ms).
    #[serde(default = "default_reconnect_max")]
    pub reconnect_max_ms: u64,
    /// How long work waits for a bind before the attempt fails over to another carrier (ms).
    #[serde(default = "default_grace")]
    pub unbound_grace_ms: u64,
    /// Inbound PDUs (receipts, MO) of one bind stored at once; past that the bind stops
    /// reading, so a flood is slowed by TCP instead of spawning without limit.
    #[serde(default = "default_inbound_in_flight")]
    pub inbound_in_flight: usize,
    /// Times a throttled (0x58) or queue-full (0x14) submit is retried on this carrier,
    /// with backoff, before the attempt fails over.
    #[serde(default = "default_throttle_retries")]
    pub throttle_retries: u32,
    /// Ask the carrier for delivery receipts.
    #[serde(default = "yes")]
    pub registered_delivery: bool,
    /// Consumer group of this carrier's dispatch topic.
    #[serde(default)]
    pub group_id: Option<String>,
    /// Most segments per second over all of this carrier's binds (unset: no limit).
    #[serde(default)]
    pub max_rate: Option<f64>,
    /// What each `command_status` in a `submit_sm_resp` means, keyed `"0x58"` (hex) or
    /// `"88"` (decimal); merged over the defaults: `0x58` throttle, `0x14` retry_later,
    /// `0x0A`/`0x0B` (bad source / destination address) fail_permanent, anything else
    /// fail_retryable. For HTTP carriers the keys are HTTP statuses (`"429"`); defaults:
    /// 429 throttle, 503 retry_later, other 4xx fail_permanent, anything else
    /// fail_retryable.
    #[serde(default)]
    pub errors: BTreeMap<String, ErrorAction>,
    /// Delay before a `retry_later` status is retried on this carrier (ms).
    #[serde(default = "default_retry_later")]
    pub retry_later_ms: u64,
    /// The throttling control interval (ms): the carrier's rate is cut at most once per
    /// interval however many throttles arrive in it, and grows again after an interval
    /// without throttles (see `limiter.rs`). `throttle_cooldown_ms` is its old name.
    #[serde(default = "default_throttle_interval", alias = "throttle_cooldown_ms")]
    pub throttle_interval_ms: u64,
    /// How this carrier writes message ids in receipts, so they meet the ids of
    /// `submit_sm_resp`: `as_is` (default), or `decimal_to_hex` when the carrier answers
    /// submits in hex but receipts in decimal.
    #[serde(default)]
    pub receipt_ids: ReceiptIds,
    /// How long the parts of a concatenated MO wait for their siblings (ms); then what
    /// arrived is forwarded, marked incomplete.
    #[serde(default = "default_mo_timeout")]
    pub mo_reassembly_timeout_ms: i64,
    /// How messages longer than one SMS go out: `udh8` (default), `udh16`, `sar` or
    /// `payload` (one PDU with `message_payload`).
    #[serde(default)]
    pub long_messages: LongMessages,
}

/// The bind PDUs a carrier's sessions use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BindMode {
    /// `bind_transceiver`: submits, receipts and MO on one session.
    #[default]
    Trx,
    /// `bind_transmitter` only.
    Tx,
    /// `bind_receiver` only.
    Rx,
    /// A `bind_transmitter` session plus a `bind_receiver` session.
    TxRx,
}

/// The role of one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Transceiver.
    Trx,
    /// Transmitter.
    Tx,
    /// Receiver.
    Rx,
}

impl Role {
    /// Whether the session takes submits.
    pub fn submits(self) -> bool {
        self != Role::Rx
    }
    /// Label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Trx => "trx",
            Role::Tx => "tx",
            Role::Rx => "rx",
        }
    }
}

impl BindMode {
    /// The sessions of one bind "unit" in this mode.
    pub fn roles(self) -> &'static [Role] {
        match self {
            BindMode::Trx => &[Role::Trx],
            BindMode::Tx => &[Role::Tx],
            BindMode::Rx => &[Role::Rx],
            BindMode::TxRx => &[Role::Tx, Role::Rx],
        }
    }
}

/// What to do with a `command_status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorAction {
    /// Slow this carrier down and send the same PDU again (`throttle_retries` times).
    Throttle,
    /// Send the same PDU again after `retry_later_ms` (`throttle_retries` times).
    RetryLater,
    /// Fail the attempt; the router may try another carrier.
    FailRetryable,
    /// Fail the attempt; no other carrier will be tried.
    FailPermanent,
}

/// How a carrier writes receipt message ids.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiptIds {
    /// The same form as `submit_sm_resp` (after case and leading-zero normalisation).
    #[default]
    AsIs,
    /// Receipts give the id in decimal where `submit_sm_resp` gave it in hex.
    DecimalToHex,
}

/// Long-message mode of a carrier (see [`smsgw_gsm::LongMode`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LongMessages {
    /// Concatenation UDH with an 8-bit reference.
    #[default]
    Udh8,
    /// Concatenation UDH with a 16-bit reference.
    Udh16,
    /// `sar_msg_ref_num` / `sar_total_segments` / `sar_segment_seqnum` TLVs.
    Sar,
    /// The whole text in `message_payload`.
    Payload,
}

impl LongMessages {
    /// The encoder's mode.
    pub fn mode(self) -> smsgw_gsm::LongMode {
        match self {
            LongMessages::Udh8 => smsgw_gsm::LongMode::Udh8,
            LongMessages::Udh16 => smsgw_gsm::LongMode::Udh16,
            LongMessages::Sar => smsgw_gsm::LongMode::Sar,
            LongMessages::Payload => smsgw_gsm::LongMode::Payload,
        }
    }
}

fn default_optout_refresh() -> u64 {
    50
}
fn default_optout_staleness() -> u64 {
    250
}
fn default_admin() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9102))
}
fn default_window() -> usize {
    10
}
fn default_response_timeout() -> u64 {
    10_000
}
fn default_enquire() -> u64 {
    30_000
}
fn default_reconnect_min() -> u64 {
    200
}
fn default_reconnect_max() -> u64 {
    30_000
}
fn default_grace() -> u64 {
    30_000
}
fn default_inbound_in_flight() -> usize {
    64
}
fn default_throttle_retries() -> u32 {
    5
}
fn default_mo_timeout() -> i64 {
    60_000
}
fn default_retry_later() -> u64 {
    1_000
}
fn default_throttle_interval() -> u64 {
    500
}
fn parse_status(key: &str) -> Option<u32> {
    match key.strip_prefix("0x").or_else(|| key.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => key.parse().ok(),
    }
}
fn yes() -> bool {
    true
}
fn one() -> usize {
    1
}

impl CarrierConfig {
    /// A carrier with defaults.
    pub fn new(name: &str, url: &str, system_id: &str, password: &str) -> Self {
        CarrierConfig {
            name: name.into(),
            url: url.into(),
            tls_ca_file: None,
            tls_server_name: None,
            http: None,
            system_id: system_id.into(),
            password: password.into(),
            system_type: String::new(),
            bind_mode: BindMode::default(),
            binds: 1,
            window: default_window(),
            response_timeout_ms: default_response_timeout(),
            enquire_link_ms: default_enquire(),
            reconnect_min_ms: default_reconnect_min(),
            reconnect_max_ms: default_reconnect_max(),
            unbound_grace_ms: default_grace(),
            inbound_in_flight: default_inbound_in_flight(),
            throttle_retries: default_throttle_retries(),
            registered_delivery: true,
            group_id: None,
            max_rate: None,
            errors: BTreeMap::new(),
            retry_later_ms: default_retry_later(),
            throttle_interval_ms: default_throttle_interval(),
            receipt_ids: ReceiptIds::default(),
            mo_reassembly_timeout_ms: default_mo_timeout(),
            long_messages: LongMessages::default(),
        }
    }

    /// The consumer group of this carrier's dispatch topic.
    pub fn group(&self) -> String {
        self.group_id
            .clone()
            .unwrap_or_else(|| format!("smsgw-dispatcher-{}", self.name))
    }

    /// What a `command_status` means on this carrier.
    pub fn action(&self, status: u32) -> ErrorAction {
        if let Some(a) = self
            .errors
            .iter()
            .find(|(k, _)| parse_status(k) == Some(status))
            .map(|(_, a)| *a)
        {
            return a;
        }
        if self.is_http() {
            return match status {
                429 => ErrorAction::Throttle,
                503 => ErrorAction::RetryLater,
                400..=499 => ErrorAction::FailPermanent,
                _ => ErrorAction::FailRetryable,
            };
        }
        match status {
            0x58 => ErrorAction::Throttle,
            0x14 => ErrorAction::RetryLater,
            0x0A | 0x0B => ErrorAction::FailPermanent,
            _ => ErrorAction::FailRetryable,
        }
    }

    /// Every session to hold open: (slot, role).
    pub fn sessions(&self) -> Vec<(usize, Role)> {
        (0..self.binds)
            .flat_map(|_| self.bind_mode.roles().iter().copied())
            .enumerate()
            .collect()
    }

    /// This instance's share of the carrier's fleet-wide limits when `instances`
    /// dispatchers run: `binds` split among them (the first `binds % instances` take one
    /// more) and `max_rate` divided evenly, so the fleet together never holds more binds
    /// or sends faster than configured. Every instance keeps at least one bind (a fleet
    /// with fewer binds than dispatchers is refused by [`DispatcherConfig::validate`]).
    pub fn share(&self, instance: u32, instances: u32) -> CarrierConfig {
        let n = instances.max(1) as usize;
        let i = (instance as usize).min(n - 1);
        let mut c = self.clone();
        if !self.is_http() {
            c.binds = (self.binds / n + usize::from(i < self.binds % n)).max(1);
        }
        c.max_rate = self.max_rate.map(|r| r / n as f64);
        c
    }

    /// Whether this carrier takes submits at all.
    pub fn submits(&self) -> bool {
        self.is_http() || self.bind_mode != BindMode::Rx
    }

    /// Whether this is an HTTP carrier.
    pub fn is_http(&self) -> bool {
        self.url.starts_with("http://") || self.url.starts_with("https://")
    }

    /// SMPP sessions to hold open (none for HTTP carriers).
    pub fn smpp_sessions(&self) -> Vec<(usize, Role)> {
        if self.is_http() {
            Vec::new()
        } else {
            self.sessions()
        }
    }

    /// Response timeout.
    pub fn response_timeout(&self) -> Duration {
        Duration::from_millis(self.response_timeout_ms)
    }

    fn validate(&self) -> Result<(), String> {
        let n = &self.name;
        if n.is_empty()
            || !n
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!("carrier name {n:?} must be [A-Za-z0-9_-]"));
        }
        if self.window == 0
            || self.response_timeout_ms == 0
            || self.reconnect_min_ms == 0
            || self.inbound_in_flight == 0
        {
            return Err(format!(
                "carrier {n}: window, response_timeout_ms, reconnect_min_ms and \
                 inbound_in_flight must be positive"
            ));
        }
        if self.is_http() {
            let http = self
                .http
                .as_ref()
                .ok_or_else(|| format!("carrier {n}: an http:// url needs an [http] section"))?;
            crate::http::HttpConnector::new(&self.url, http)
                .map_err(|e| format!("carrier {n}: http: {e}"))?;
        } else if !self.url.starts_with("smpp://") && !self.url.starts_with("smpps://") {
            return Err(format!(
                "carrier {n}: url must start with smpp://, smpps://, http:// or https://"
            ));
        } else if self.http.is_some() {
            return Err(format!(
                "carrier {n}: an [http] section needs an http(s):// url"
            ));
        } else if self.system_id.is_empty() || self.system_id.len() > 15 {
            return Err(format!("carrier {n}: system_id must be 1 to 15 characters"));
        }
        if self.url.starts_with("smpps://") {
            crate::tls::connector(self).map_err(|e| format!("carrier {n}: {e}"))?;
        } else if self.tls_ca_file.is_some() || self.tls_server_name.is_some() {
            return Err(format!(
                "carrier {n}: tls_ca_file and tls_server_name need an smpps:// url"
            ));
        }
        let password = crate::http::secret(&self.password)
            .map_err(|e| format!("carrier {n}: password: {e}"))?;
        if !self.is_http() && password.len() > 8 {
            return Err(format!(
                "carrier {n}: password must be at most 8 characters (SMPP 3.4)"
            ));
        }
        if self.binds == 0 || self.binds > 64 {
            return Err(format!("carrier {n}: binds must be 1 to 64"));
        }
        if let Some(k) = self.errors.keys().find(|k| parse_status(k).is_none()) {
            return Err(format!(
                "carrier {n}: errors key {k:?} is not a status (\"0x58\" or \"88\")"
            ));
        }
        if self.max_rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
            return Err(format!("carrier {n}: max_rate must be a positive number"));
        }
        if self.reconnect_max_ms < self.reconnect_min_ms {
            return Err(format!("carrier {n}: reconnect_max_ms < reconnect_min_ms"));
        }
        Ok(())
    }
}

impl Config {
    /// A config with defaults for these carriers.
    pub fn new(kafka: KafkaConfig, carriers: Vec<CarrierConfig>) -> Self {
        Config {
            kafka,
            admin_listen: default_admin(),
            webhook_listen: None,
            carriers,
            optout_refresh_ms: default_optout_refresh(),
            optout_max_staleness_ms: default_optout_staleness(),
            restart_lookback_ms: default_restart_lookback(),
            drain_timeout_ms: default_drain_timeout(),
        }
    }

    /// Fails fast on values that cannot work.
    pub fn validate(&self) -> Result<(), String> {
        self.kafka.validate()?;
        if self.carriers.is_empty() {
            return Err("no carriers configured".into());
        }
        let mut names: Vec<&str> = self.carriers.iter().map(|c| c.name.as_str()).collect();
        names.sort();
        if names.windows(2).any(|w| w[0] == w[1]) {
            return Err("carrier names must be unique".into());
        }
        self.carriers.iter().try_for_each(CarrierConfig::validate)?;
        let instances = self.kafka.instances as usize;
        if let Some(c) = self
            .carriers
            .iter()
            .find(|c| !c.is_http() && c.binds < instances)
        {
            return Err(format!(
                "carrier {}: binds = {} is fewer than kafka.instances = {instances}: the binds are shared among the dispatchers and each needs one; raise binds or run fewer dispatchers",
                c.name, c.binds
            ));
        }
        if self.optout_refresh_ms == 0 || self.optout_max_staleness_ms < self.optout_refresh_ms {
            return Err(
                "optout_refresh_ms must be positive and at most optout_max_staleness_ms".into(),
            );
        }
        if crate::webhook::wanted(&self.carriers) && self.webhook_listen.is_none() {
            return Err("a carrier has http.webhook: set webhook_listen".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_table_overrides_defaults() {
        let mut c = CarrierConfig::new("a", "smpp://h:1", "id", "pw");
        assert_eq!(c.action(0x58), ErrorAction::Throttle);
        assert_eq!(c.action(0x14), ErrorAction::RetryLater);
        assert_eq!(c.action(0x0B), ErrorAction::FailPermanent);
        assert_eq!(c.action(0x45), ErrorAction::FailRetryable);
        c.errors.insert("0x45".into(), ErrorAction::FailPermanent);
        c.errors.insert("88".into(), ErrorAction::RetryLater);
        assert_eq!(c.action(0x45), ErrorAction::FailPermanent);
        assert_eq!(c.action(0x58), ErrorAction::RetryLater);
        assert!(c.validate().is_ok());
        c.errors.insert("bogus".into(), ErrorAction::Throttle);
        assert!(c.validate().is_err());
    }

    #[test]
    fn bind_modes_expand_to_sessions() {
        let mut c = CarrierConfig::new("a", "smpp://h:1", "id", "pw");
        assert_eq!(c.sessions(), vec![(0, Role::Trx)]);
        c.bind_mode = BindMode::TxRx;
        c.binds = 2;
        assert_eq!(
            c.sessions(),
            vec![(0, Role::Tx), (1, Role::Rx), (2, Role::Tx), (3, Role::Rx)]
        );
        assert!(c.submits());
        c.bind_mode = BindMode::Rx;
        assert!(!c.submits());
        assert!(c.sessions().iter().all(|(_, r)| !r.submits()));
        let j = r#"{"name":"a","url":"smpp://h:1","system_id":"i","password":"p","bind_mode":"tx_rx","binds":3}"#;
        let c: CarrierConfig = serde_json::from_str(j).unwrap();
        assert_eq!((c.bind_mode, c.binds), (BindMode::TxRx, 3));
        let j =
            r#"{"name":"a","url":"smpp://h:1","system_id":"i","password":"p","bind_mode":"both"}"#;
        assert!(serde_json::from_str::<CarrierConfig>(j).is_err());
        let mut c = CarrierConfig::new("a", "smpp://h:1", "id", "pw");
        c.binds = 0;
        assert!(c.validate().is_err());
    }

    #[test]
    fn unknown_fields_and_bad_values_fail() {
        let bad = r#"{"name":"a","url":"smpp://h:1","system_id":"i","password":"p","windw":3}"#;
        let err = serde_json::from_str::<CarrierConfig>(bad)
            .unwrap_err()
            .to_string();
        assert!(err.contains("windw"), "{err}");
        let mut c = CarrierConfig::new("a", "http://h", "id", "pw");
        assert!(c.validate().is_err());
        c.url = "smpp://h:1".into();
        c.window = 0;
        assert!(c.validate().is_err());
    }

    #[test]
    fn the_fleet_together_holds_the_configured_binds_and_rate() {
        // Given a carrier allowed 5 binds and 90 segments/s,
        let mut c = CarrierConfig::new("a", "smpp://h:1", "id", "pw");
        (c.binds, c.max_rate) = (5, Some(90.0));
        for instances in 1..=5u32 {
            // when `instances` dispatchers each take their share,
            let shares: Vec<CarrierConfig> =
                (0..instances).map(|i| c.share(i, instances)).collect();
            // then the binds and rates add up to the carrier's limits, and none is idle.
            assert_eq!(
                shares.iter().map(|s| s.binds).sum::<usize>(),
                5,
                "{instances}"
            );
            assert!(shares.iter().all(|s| s.binds >= 1));
            let rate: f64 = shares.iter().map(|s| s.max_rate.unwrap()).sum();
            assert!((rate - 90.0).abs() < 1e-9, "{instances}: {rate}");
        }
        assert_eq!(c.share(0, 2).binds, 3);
        assert_eq!(c.share(1, 2).binds, 2);
        c.max_rate = None;
        assert_eq!(c.share(1, 3).max_rate, None);
    }
}
