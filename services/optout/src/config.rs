//! Optout configuration: defaults, then per-account and per-sender overrides.

use crate::keywords::{default_help, default_start, default_stop, KeywordLists, Keywords};
use serde::Deserialize;
use smsgw_codec::{account_scope, sender_scope, GLOBAL_SCOPE};
use smsgw_kafka::KafkaConfig;
use smsgw_runtime::secret;
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// Everything optout needs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Brokers, client properties and topic names.
    pub kafka: KafkaConfig,
    /// Address of `/metrics` and `/healthz`.
    #[serde(default = "default_admin")]
    pub admin_listen: SocketAddr,
    /// Address of the opt-out API (`/v1/optouts`).
    #[serde(default = "default_api")]
    pub api_listen: SocketAddr,
    /// Consumer group that reads MO messages for keywords.
    #[serde(default = "default_group")]
    pub group_id: String,
    /// Consumer group that forwards other MO messages to webhooks (its own, so a slow
    /// webhook never delays keywords).
    #[serde(default = "default_webhook_group")]
    pub webhook_group_id: String,
    /// How often the API's copy of the opt-out log catches up (ms).
    #[serde(default = "default_refresh")]
    pub refresh_ms: u64,
    /// The defaults: scope, keywords, replies, webhook.
    #[serde(default)]
    pub defaults: Profile,
    /// Accounts (sender pools): the senders in each, and their overrides.
    #[serde(default)]
    pub accounts: BTreeMap<String, Account>,
    /// Overrides per sender id (the number or short code an MO was sent to, without `+`).
    #[serde(default)]
    pub senders: BTreeMap<String, Profile>,
    /// How MO webhooks are retried.
    #[serde(default)]
    pub webhook_retry: Retry,
    /// API keys of the opt-out API, one `name:sha256hex[:requests_per_second]` per line
    /// (see ingest's `api_keys`; usually `SMSGW_API_KEYS` from a Secret). Required unless
    /// `auth = "disabled"`.
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

fn default_rate() -> f64 {
    100.0
}

/// A pool of senders that share opt-outs (scope `account:<name>`; messages carry the
/// account as their `client_id`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Account {
    /// Sender ids of the account.
    #[serde(default)]
    pub senders: Vec<String>,
    /// Overrides for every sender of the account.
    #[serde(default)]
    pub profile: Profile,
}

/// Settings that can be set by default, per account and per sender; the most specific
/// one that is set wins.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Which senders a keyword STOP applies to: `sender` (default), `account` or `global`.
    #[serde(default)]
    pub scope: Option<Scope>,
    /// Keyword lists (defaults: the usual carrier sets).
    #[serde(default)]
    pub keywords: KeywordLists,
    /// Reply to STOP (sent through the pipeline; the opt-out does not block it).
    /// `{sender}` is replaced by the sender id.
    #[serde(default)]
    pub stop_reply: Option<String>,
    /// Reply to START.
    #[serde(default)]
    pub start_reply: Option<String>,
    /// Reply to HELP.
    #[serde(default)]
    pub help_reply: Option<String>,
    /// URL that other MO messages to this sender are POSTed to.
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// HMAC-SHA256 key for the webhook's signature (or `env:NAME`).
    #[serde(default)]
    pub webhook_secret: Option<String>,
}

/// Which senders an opt-out applies to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Only the number or short code the STOP was sent to.
    #[default]
    Sender,
    /// Every sender of the account the number belongs to.
    Account,
    /// Every sender.
    Global,
}

pub use smsgw_runtime::webhook::Retry;

fn default_admin() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9104))
}
fn default_api() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8082))
}
fn default_group() -> String {
    "smsgw-optout".into()
}
fn default_webhook_group() -> String {
    "smsgw-optout-webhooks".into()
}
fn default_refresh() -> u64 {
    100
}

/// What applies to one sender, resolved.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The opt-out scope of a keyword STOP to this sender.
    pub scope: String,
    /// Keywords.
    pub keywords: Keywords,
    /// Replies by keyword.
    pub stop_reply: Option<String>,
    /// See `stop_reply`.
    pub start_reply: Option<String>,
    /// See `stop_reply`.
    pub help_reply: Option<String>,
    /// Webhook for other MO.
    pub webhook_url: Option<String>,
    /// Its signing key (resolved).
    pub webhook_secret: Option<String>,
}

/// The sender id as configured and as scopes write it: no `+`, trimmed.
pub fn sender_id(s: &str) -> &str {
    s.trim().trim_start_matches('+')
}

impl Config {
    /// A config with defaults.
    pub fn new(kafka: KafkaConfig) -> Self {
        Config {
            kafka,
            admin_listen: default_admin(),
            api_listen: default_api(),
            group_id: default_group(),
            webhook_group_id: default_webhook_group(),
            refresh_ms: default_refresh(),
            defaults: Profile::default(),
            accounts: BTreeMap::new(),
            senders: BTreeMap::new(),
            webhook_retry: Retry::default(),
            api_keys: None,
            auth: smsgw_runtime::auth::AuthMode::default(),
            api_rate_limit: default_rate(),
        }
    }

    /// The account a sender belongs to.
    pub fn account_of(&self, sender: &str) -> Option<&str> {
        let s = sender_id(sender);
        self.accounts
            .iter()
            .find(|(_, a)| a.senders.iter().any(|x| sender_id(x) == s))
            .map(|(name, _)| name.as_str())
    }

    /// What applies to MO sent to `sender`: sender overrides, then the account's, then
    /// the defaults.
    pub fn resolve(&self, sender: &str) -> Result<Resolved, String> {
        let account = self.account_of(sender);
        let chain: Vec<&Profile> = [
            self.senders.get(sender_id(sender)),
            account
                .and_then(|a| self.accounts.get(a))
                .map(|a| &a.profile),
            Some(&self.defaults),
        ]
        .into_iter()
        .flatten()
        .collect();
        fn pick<'a, T>(
            chain: &[&'a Profile],
            f: impl Fn(&'a Profile) -> Option<&'a T>,
        ) -> Option<&'a T> {
            chain.iter().find_map(|p| f(p))
        }
        let stop = pick(&chain, |p| p.keywords.stop.as_ref())
            .cloned()
            .unwrap_or_else(default_stop);
        let start = pick(&chain, |p| p.keywords.start.as_ref())
            .cloned()
            .unwrap_or_else(default_start);
        let help = pick(&chain, |p| p.keywords.help.as_ref())
            .cloned()
            .unwrap_or_else(default_help);
        let keywords = Keywords::new(&stop, &start, &help)
            .map_err(|e| format!("keywords for sender {sender}: {e}"))?;
        let scope = match pick(&chain, |p| p.scope.as_ref())
            .copied()
            .unwrap_or_default()
        {
            Scope::Global => GLOBAL_SCOPE.to_string(),
            Scope::Sender => sender_scope(sender),
            Scope::Account => match account {
                Some(a) => account_scope(a),
                None => {
                    return Err(format!(
                        "sender {sender}: scope is account but the sender is in no account"
                    ))
                }
            },
        };
        let reply = |f: fn(&Profile) -> Option<&String>| {
            pick(&chain, f).map(|r| r.replace("{sender}", sender_id(sender)))
        };
        let webhook_secret = match pick(&chain, |p| p.webhook_secret.as_ref()) {
            Some(s) => Some(secret(s)?),
            None => None,
        };
        Ok(Resolved {
            scope,
            keywords,
            stop_reply: reply(|p| p.stop_reply.as_ref()),
            start_reply: reply(|p| p.start_reply.as_ref()),
            help_reply: reply(|p| p.help_reply.as_ref()),
            webhook_url: pick(&chain, |p| p.webhook_url.as_ref()).cloned(),
            webhook_secret,
        })
    }

    /// The parsed API keys (empty when none are configured).
    pub fn keys(&self) -> Result<smsgw_runtime::auth::ApiKeys, String> {
        smsgw_runtime::auth::ApiKeys::parse(
            self.api_keys.as_deref().unwrap_or(""),
            self.api_rate_limit,
        )
    }

    /// Fails fast on values that cannot work: every configured sender and account must
    /// resolve, and the defaults too.
    pub fn validate(&self) -> Result<(), String> {
        self.kafka.validate()?;
        self.auth.check(&self.keys()?)?;
        let mut senders: Vec<&str> = self.senders.keys().map(String::as_str).collect();
        for (name, a) in &self.accounts {
            if name.is_empty() || name.contains('|') {
                return Err(format!("account name {name:?} is empty or has a |"));
            }
            senders.extend(a.senders.iter().map(String::as_str));
        }
        let mut seen = std::collections::HashSet::new();
        for (name, a) in &self.accounts {
            for s in &a.senders {
                if !seen.insert(sender_id(s).to_string()) {
                    return Err(format!("sender {s} is in two accounts (second: {name})"));
                }
            }
        }
        if self.defaults.scope == Some(Scope::Account) {
            return Err("the default scope cannot be account: set it per account".into());
        }
        // A sender nobody configured resolves to the defaults.
        self.resolve("0")?;
        for s in senders {
            self.resolve(s)?;
        }
        for url in self
            .senders
            .values()
            .chain(self.accounts.values().map(|a| &a.profile))
            .chain([&self.defaults])
            .filter_map(|p| p.webhook_url.as_ref())
        {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!("webhook_url {url:?} must be http(s)://"));
            }
        }
        self.keys()?;
        if self.webhook_retry.max_attempts == 0 || self.refresh_ms == 0 {
            return Err("webhook_retry.max_attempts and refresh_ms must be positive".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keywords::Keyword;

    /// A config from `toml_like` over brokers and an open API (these tests are about
    /// profiles; the auth rule has its own test below).
    fn config(toml_like: serde_json::Value) -> Config {
        let mut v = serde_json::json!({"kafka": {"brokers": "x:1"}, "auth": "disabled"});
        v.as_object_mut()
            .unwrap()
            .extend(toml_like.as_object().unwrap().clone());
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn sender_overrides_account_overrides_defaults() {
        let c = config(serde_json::json!({
            "defaults": {"stop_reply": "Bye from {sender}", "help_reply": "Help!"},
            "accounts": {"acme": {"senders": ["+447700900001", "ACME"],
                "profile": {"scope": "account", "keywords": {"stop": ["BASTA"]}, "help_reply": "Acme help"}}},
            "senders": {"ACME": {"scope": "global", "stop_reply": "Acme bye"}}
        }));
        c.validate().unwrap();
        let plain = c.resolve("447700900999").unwrap();
        assert_eq!(plain.scope, "sender:447700900999");
        assert_eq!(plain.stop_reply.as_deref(), Some("Bye from 447700900999"));
        assert_eq!(plain.keywords.classify("stop"), Some(Keyword::Stop));
        let pooled = c.resolve("447700900001").unwrap();
        assert_eq!(pooled.scope, "account:acme");
        assert_eq!(pooled.keywords.classify("basta"), Some(Keyword::Stop));
        assert_eq!(
            pooled.keywords.classify("stop"),
            None,
            "the account's list replaces"
        );
        assert_eq!(pooled.help_reply.as_deref(), Some("Acme help"));
        let acme = c.resolve("ACME").unwrap();
        assert_eq!(acme.scope, "global");
        assert_eq!(acme.stop_reply.as_deref(), Some("Acme bye"));
        assert_eq!(acme.help_reply.as_deref(), Some("Acme help"));
        assert_eq!(c.account_of("+447700900001"), Some("acme"));
    }

    #[test]
    fn bad_configs_fail_at_start() {
        let bad = [
            serde_json::json!({"defaults": {"scope": "account"}}),
            serde_json::json!({"senders": {"S": {"scope": "account"}}}),
            serde_json::json!({"senders": {"S": {"keywords": {"start": ["STOP"]}}}}),
            serde_json::json!({"accounts": {"a": {"senders": ["1"]}, "b": {"senders": ["+1"]}}}),
            serde_json::json!({"senders": {"S": {"webhook_url": "ftp://x"}}}),
            serde_json::json!({"senders": {"S": {"webhook_secret": "env:SMSGW_TEST_NOT_SET_X"}}}),
        ];
        for b in bad {
            assert!(config(b.clone()).validate().is_err(), "{b}");
        }
        let unknown =
            serde_json::json!({"kafka": {"brokers": "x:1"}, "defaults": {"stop_words": []}});
        assert!(serde_json::from_value::<Config>(unknown).is_err());
    }

    #[test]
    fn given_no_api_keys_then_the_service_refuses_to_start_unless_auth_is_disabled() {
        let v = serde_json::json!({"kafka": {"brokers": "x:1"}});
        let keyless: Config = serde_json::from_value(v).unwrap();
        assert!(keyless.validate().unwrap_err().contains("no api_keys"));
        assert!(config(serde_json::json!({})).validate().is_ok());
    }
}
