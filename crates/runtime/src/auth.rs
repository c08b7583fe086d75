//! API keys for the HTTP APIs (ingest's `/v1/messages`, optout's `/v1/optouts`).
//!
//! Keys are stored hashed: the configured `api_keys` text holds one key per line,
//! `name:sha256hex[:requests_per_second][:attribute=value...]` (the SHA-256 of the key,
//! in hex). The attributes say whom the key speaks for:
//! - `account=<id>`: the account (client id) it belongs to; default: the key's name;
//! - `accounts=<id>,<id>`: other accounts it may act for (an agency's clients);
//! - `senders=<id>,<id>`: the only sender ids it may send as, and whose `sender:` opt-out
//!   lists it manages; default: any sender, and no sender lists;
//! - `role=admin`: may manage the global opt-out list and every scope.
//!
//! A caller sends the key itself as `Authorization: Bearer <key>` or `X-Api-Key: <key>`;
//! it is hashed and compared in constant time. Each key has its own token bucket (burst
//! equal to its rate) counted in messages: a request costs one, and a batch of N costs N
//! once it is read ([`Caller::charge`]), running the bucket into debt that later requests
//! wait out. Unauthenticated calls get 401, calls over the rate 429 with
//! `Retry-After`, both with a JSON `{"error", "reason"}`. Handlers get the key's identity
//! as a [`Caller`]: what a request body or header claims is checked against it, never
//! taken instead of it.

use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Who a request speaks for, from its key, put in the request's extensions.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The key's name: the audit actor of what the request changes.
    pub name: String,
    /// The key's own account: the client id of a request that names none.
    pub account: String,
    /// Every account it may act for, its own first.
    pub accounts: Vec<String>,
    /// The sender ids it may send as (`None`: any).
    pub senders: Option<Vec<String>>,
    /// May manage every opt-out scope, the global list included.
    pub admin: bool,
    /// No key was checked (`auth = "disabled"`): the caller may claim any account.
    pub open: bool,
    /// The key's token bucket (none when open).
    bucket: Option<Arc<Bucket>>,
}

/// A key's rate and its tokens (negative: in debt after a batch) as of an instant.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    tokens: Mutex<(f64, Instant)>,
}

impl Bucket {
    /// Takes `n` messages at `now`: when `at_least_one`, only if a whole token is there
    /// (else the seconds until one is, rounded up); otherwise whatever the balance, into
    /// debt if need be.
    fn take(&self, n: u32, at_least_one: bool, now: Instant) -> Result<(), u64> {
        let mut t = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        let tokens =
            (t.0 + now.saturating_duration_since(t.1).as_secs_f64() * self.rate).min(self.rate);
        if at_least_one && tokens < 1.0 {
            *t = (tokens, now);
            return Err(((1.0 - tokens) / self.rate).ceil().max(1.0) as u64);
        }
        *t = (tokens - f64::from(n), now);
        Ok(())
    }
}

impl Caller {
    /// The caller of an API whose authentication is disabled explicitly.
    pub fn anonymous() -> Self {
        Caller {
            name: "anonymous".into(),
            account: "http".into(),
            accounts: Vec::new(),
            senders: None,
            admin: true,
            open: true,
            bucket: None,
        }
    }

    /// Charges `n` more messages to the key (the request itself was charged one): a
    /// batch of N costs N. The bucket may go into debt, so a batch larger than the
    /// burst is taken once and the key's next requests wait until it is paid back.
    pub fn charge(&self, n: u32, now: Instant) {
        if let Some(b) = &self.bucket {
            let _ = b.take(n, false, now);
        }
    }

    /// Whether it may act for `account` (as a message's client id, or an `account:`
    /// opt-out scope).
    pub fn may_act_for(&self, account: &str) -> bool {
        self.open || self.accounts.iter().any(|a| a == account)
    }

    /// Whether it may send with sender id `sender`.
    pub fn may_send_as(&self, sender: &str) -> bool {
        self.open
            || self
                .senders
                .as_ref()
                .is_none_or(|s| s.iter().any(|x| x == sender))
    }

    /// Whether it may read and change the opt-out list `scope` (`global`,
    /// `sender:<id>`, `account:<id>`): global needs an admin; a sender list needs the
    /// sender named on the key.
    pub fn may_manage_scope(&self, scope: &str) -> bool {
        if self.open || self.admin {
            return true;
        }
        if let Some(sender) = scope.strip_prefix("sender:") {
            return self
                .senders
                .as_ref()
                .is_some_and(|s| s.iter().any(|x| x == sender));
        }
        scope
            .strip_prefix("account:")
            .is_some_and(|a| self.may_act_for(a))
    }

    /// The client id of a request that claims `claimed` (body or header): the claim when
    /// the key may act for it, the key's account when there is none; `Err` with the
    /// reason otherwise.
    pub fn client_id(&self, claimed: Option<String>) -> Result<String, String> {
        match claimed {
            Some(c) if self.may_act_for(&c) => Ok(c),
            Some(c) => Err(format!(
                "key {} may not act for account {:?}",
                self.name,
                crate::clip_str(&c, 64)
            )),
            None => Ok(self.account.clone()),
        }
    }
}

/// How an HTTP API authenticates callers (`auth` in the ingest and optout configs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// API keys are required, and a service without any refuses to start.
    #[default]
    Keys,
    /// Anyone who reaches the port may call: demos and tests only, and only when said
    /// explicitly.
    Disabled,
}

impl AuthMode {
    /// Fails when keys are required and none are configured.
    pub fn check(self, keys: &ApiKeys) -> Result<(), String> {
        match self {
            AuthMode::Keys if keys.is_empty() => Err(
                "no api_keys configured (usually SMSGW_API_KEYS from a Secret): set them, or \
                 set auth = \"disabled\" to run the API open"
                    .into(),
            ),
            _ => Ok(()),
        }
    }
}

#[derive(Debug)]
struct Key {
    /// Who the key speaks for, its token bucket included.
    caller: Caller,
    hash: [u8; 32],
}

/// The configured keys.
#[derive(Debug, Clone)]
pub struct ApiKeys {
    keys: Arc<Vec<Key>>,
    failures: Arc<Mutex<Failures>>,
}

/// Failed authentications per source address: each source may fail
/// [`FAILURE_BURST`] times, then once per [`FAILURE_REFILL_S`] seconds; past that its
/// calls are refused (429) before any key is checked, so keys cannot be guessed at
/// speed. At most [`FAILURE_SOURCES`] sources are remembered: when full, the sources
/// whose allowance has refilled are forgotten, then (a flood of sources) all of them.
#[derive(Debug, Default)]
struct Failures {
    by_source: std::collections::HashMap<std::net::IpAddr, (f64, Instant)>,
}

/// Failed authentications a source may make at once.
pub const FAILURE_BURST: f64 = 10.0;
/// Seconds for a source to earn one more failed authentication.
pub const FAILURE_REFILL_S: f64 = 1.0;
/// Sources remembered at most.
pub const FAILURE_SOURCES: usize = 10_000;

/// A source's allowance `left` as of `at`, refilled until `now` (capped at the burst).
fn refilled(left: f64, at: Instant, now: Instant) -> f64 {
    (left + now.saturating_duration_since(at).as_secs_f64() / FAILURE_REFILL_S).min(FAILURE_BURST)
}

impl Failures {
    fn allowance(&self, source: std::net::IpAddr, now: Instant) -> f64 {
        self.by_source
            .get(&source)
            .map_or(FAILURE_BURST, |(left, at)| refilled(*left, *at, now))
    }

    fn failed(&mut self, source: std::net::IpAddr, now: Instant) {
        let left = self.allowance(source, now) - 1.0;
        if self.by_source.len() >= FAILURE_SOURCES && !self.by_source.contains_key(&source) {
            let by = &mut self.by_source;
            // Forget the sources whose allowance is whole again.
            by.retain(|_, (left, at)| refilled(*left, *at, now) < FAILURE_BURST);
            if by.len() >= FAILURE_SOURCES {
                by.clear();
            }
        }
        self.by_source.insert(source, (left, now));
    }
}

/// The SHA-256 of a key, in hex: what goes in the config.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl ApiKeys {
    /// Parses `name:sha256hex[:rate]` lines (blank lines and `#` comments skipped);
    /// `default_rate` applies where a line sets none. Fails naming the bad line.
    pub fn parse(text: &str, default_rate: f64) -> Result<Self, String> {
        if !(default_rate > 0.0 && default_rate.is_finite()) {
            return Err("api_rate_limit must be a positive number".into());
        }
        let mut keys = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut parts = line.split(':');
            let (name, hash) = (parts.next(), parts.next());
            let bad = |why: &str| format!("api_keys line {}: {why}", i + 1);
            let mut rate = None;
            let mut attrs = std::collections::HashMap::new();
            for (j, part) in parts.enumerate() {
                match part.split_once('=') {
                    Some((k, v)) => {
                        if !["account", "accounts", "senders", "role"].contains(&k) {
                            return Err(bad(&format!(
                                "unknown attribute {k:?} (account, accounts, senders, role)"
                            )));
                        }
                        if attrs.insert(k, v).is_some() {
                            return Err(bad(&format!("{k} given twice")));
                        }
                    }
                    None if j == 0 => rate = Some(part),
                    None => return Err(bad(&format!("{part:?} is not attribute=value"))),
                }
            }
            let name = name
                .filter(|n| !n.is_empty())
                .ok_or_else(|| bad("no name"))?;
            let hash = hash
                .and_then(|h| hex::decode(h).ok())
                .and_then(|h| <[u8; 32]>::try_from(h).ok())
                .ok_or_else(|| bad("the hash must be 64 hex digits (SHA-256)"))?;
            let rate = match rate {
                Some(r) => r
                    .parse::<f64>()
                    .ok()
                    .filter(|r| *r > 0.0 && r.is_finite())
                    .ok_or_else(|| bad("the rate must be a positive number"))?,
                None => default_rate,
            };
            if keys.iter().any(|k: &Key| k.caller.name == name) {
                return Err(bad("duplicate name"));
            }
            let list = |k: &str| -> Result<Option<Vec<String>>, String> {
                let Some(v) = attrs.get(k) else {
                    return Ok(None);
                };
                let items: Vec<String> = v.split(',').map(|x| x.trim().to_string()).collect();
                if items.iter().any(|x| x.is_empty() || x.len() > 128) {
                    return Err(bad(&format!("{k}: each entry 1 to 128 bytes")));
                }
                Ok(Some(items))
            };
            let account = attrs.get("account").copied().unwrap_or(name).to_string();
            if account.is_empty() || account.len() > 128 {
                return Err(bad("account: 1 to 128 bytes"));
            }
            let mut accounts = vec![account.clone()];
            for a in list("accounts")?.unwrap_or_default() {
                if !accounts.contains(&a) {
                    accounts.push(a);
                }
            }
            if accounts.iter().any(|a| a.starts_with("smsgw-")) {
                return Err(bad("accounts starting with smsgw- are the gateway's own"));
            }
            let admin = match attrs.get("role").copied() {
                None => false,
                Some("admin") => true,
                Some(r) => return Err(bad(&format!("role {r:?}: the only role is admin"))),
            };
            let caller = Caller {
                name: name.to_string(),
                account,
                accounts,
                senders: list("senders")?,
                admin,
                open: false,
                bucket: Some(Arc::new(Bucket {
                    rate,
                    tokens: Mutex::new((rate, Instant::now())),
                })),
            };
            keys.push(Key { caller, hash });
        }
        Ok(ApiKeys {
            keys: Arc::new(keys),
            failures: Arc::default(),
        })
    }

    /// How many keys there are.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there are none (the API is then open).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Who `headers` from `source` authenticate as, or the refusal: a source that failed
    /// too often is refused (429 `too_many_failures`) before its key is looked at, and
    /// each 401 counts against its source.
    pub fn check_from(
        &self,
        source: Option<std::net::IpAddr>,
        headers: &HeaderMap,
        now: Instant,
    ) -> Result<Caller, Box<Response>> {
        let lock = || self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ip) = source {
            let left = lock().allowance(ip, now);
            if left < 1.0 {
                let wait = ((1.0 - left) * FAILURE_REFILL_S).ceil().max(1.0) as u64;
                let reason =
                    format!("too many failed authentications from {ip}; retry after {wait} s");
                return Err(Box::new(too_many("too_many_failures", reason, wait)));
            }
        }
        let checked = self.check(headers, now);
        if let (Some(ip), Err(r)) = (source, &checked) {
            if r.status() == StatusCode::UNAUTHORIZED {
                lock().failed(ip, now);
            }
        }
        checked
    }

    /// Who `headers` authenticate as, or the refusal.
    pub fn check(&self, headers: &HeaderMap, now: Instant) -> Result<Caller, Box<Response>> {
        let presented = headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .or_else(|| {
                headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
            })
            .map(str::trim);
        let Some(presented) = presented.filter(|k| !k.is_empty()) else {
            return Err(Box::new(refuse(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "send an API key as `Authorization: Bearer <key>` or `X-Api-Key: <key>`",
            )));
        };
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        // Compare with every key, so the time does not say which one nearly matched.
        let found = self.keys.iter().fold(None, |hit, k| {
            if ct_eq(&k.hash, &digest) {
                Some(k)
            } else {
                hit
            }
        });
        let Some(key) = found else {
            return Err(Box::new(refuse(
                StatusCode::UNAUTHORIZED,
                "invalid_api_key",
                "the API key is not valid",
            )));
        };
        let caller = &key.caller;
        if let Some(bucket) = &caller.bucket {
            if let Err(wait) = bucket.take(1, true, now) {
                let reason = format!(
                    "key {} is limited to {} messages per second (a batch of N counts N); \
                     retry after {wait} s",
                    caller.name, bucket.rate
                );
                return Err(Box::new(too_many("rate_limited", reason, wait)));
            }
        }
        Ok(caller.clone())
    }
}

/// 429 with `Retry-After: wait` seconds.
fn too_many(error: &str, reason: String, wait: u64) -> Response {
    let mut r = refuse(StatusCode::TOO_MANY_REQUESTS, error, reason);
    r.headers_mut()
        .insert("retry-after", wait.to_string().parse().expect("digits"));
    r
}

/// The caller a handler sees: the key's identity from the request's extensions, or the
/// open caller of an API whose authentication is disabled.
pub fn caller_of(c: Option<axum::Extension<Caller>>) -> Caller {
    c.map(|c| c.0).unwrap_or_else(Caller::anonymous)
}

fn refuse(code: StatusCode, error: &str, reason: impl Into<String>) -> Response {
    (
        code,
        axum::Json(serde_json::json!({"error": error, "reason": reason.into()})),
    )
        .into_response()
}

/// Middleware: lets a request through with its [`Caller`] when `keys` accept it; with no
/// keys configured (only possible with `auth = "disabled"`), everything passes as
/// [`Caller::anonymous`].
pub async fn require_key(
    axum::extract::State(keys): axum::extract::State<ApiKeys>,
    mut req: Request,
    next: Next,
) -> Response {
    let source = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let caller = if keys.is_empty() {
        Caller::anonymous()
    } else {
        match keys.check_from(source, req.headers(), Instant::now()) {
            Ok(c) => c,
            Err(r) => return *r,
        }
    };
    req.extensions_mut().insert(caller);
    next.run(req).await
}

impl ApiKeys {
    /// Wraps `router`'s routes (those added so far) in the key check.
    pub fn protect<S: Clone + Send + Sync + 'static>(
        &self,
        router: axum::Router<S>,
    ) -> axum::Router<S> {
        router.route_layer(axum::middleware::from_fn_with_state(
            self.clone(),
            require_key,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn headers(k: &str, v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
        h
    }

    #[test]
    fn keys_are_checked_by_hash_and_limited_per_key() {
        let text = format!(
            "# comment\nshop:{}:2\ncrm:{}\n",
            hash_key("s3cret-shop"),
            hash_key("s3cret-crm")
        );
        let keys = ApiKeys::parse(&text, 100.0).unwrap();
        assert_eq!(keys.len(), 2);
        let t0 = Instant::now();
        let shop = headers("authorization", "Bearer s3cret-shop");
        assert_eq!(keys.check(&shop, t0).unwrap().name, "shop");
        assert!(keys.check(&shop, t0).is_ok());
        let limited = keys.check(&shop, t0).unwrap_err();
        assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(limited.headers().contains_key("retry-after"));
        // The other key has its own bucket.
        assert_eq!(
            keys.check(&headers("x-api-key", "s3cret-crm"), t0)
                .unwrap()
                .name,
            "crm"
        );
        // Half a second refills one request at 2/s.
        assert!(keys.check(&shop, t0 + Duration::from_millis(500)).is_ok());
        let status = |h: &HeaderMap| keys.check(h, t0).unwrap_err().status();
        assert_eq!(status(&HeaderMap::new()), StatusCode::UNAUTHORIZED);
        assert_eq!(
            status(&headers("x-api-key", "guess")),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            status(&headers("authorization", "Basic czNjcmV0")),
            StatusCode::UNAUTHORIZED
        );
    }

    #[test]
    fn given_a_batch_larger_than_the_burst_then_it_is_taken_once_and_paid_back_in_time() {
        // Given a key limited to 10 messages per second,
        let keys = ApiKeys::parse(&format!("bulk:{}:10", hash_key("k")), 1.0).unwrap();
        let h = headers("x-api-key", "k");
        let t0 = Instant::now();
        // when it sends a batch of 50 (the request costs 1, the rest 49 more),
        keys.check(&h, t0).unwrap().charge(49, t0);
        // then the next request waits until the 40 messages of debt are paid back (4 s
        // at 10/s, plus one token for itself),
        let refused = keys.check(&h, t0 + Duration::from_secs(2)).unwrap_err();
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        let wait: u64 = refused.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(wait, 3, "20 tokens of debt left after 2 s, plus 1, at 10/s");
        assert!(keys.check(&h, t0 + Duration::from_millis(4_050)).is_err());
        assert!(keys.check(&h, t0 + Duration::from_millis(4_150)).is_ok());
        // and an open API charges nothing.
        Caller::anonymous().charge(1_000, t0);
    }

    #[test]
    fn given_a_source_that_keeps_failing_then_it_is_refused_before_its_key_is_checked() {
        let keys = ApiKeys::parse(&format!("shop:{}", hash_key("right")), 1_000.0).unwrap();
        let (a, b) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let (wrong, right) = (headers("x-api-key", "guess"), headers("x-api-key", "right"));
        let t0 = Instant::now();
        // Given ten failed authentications from a,
        for _ in 0..10 {
            let r = keys.check_from(Some(a), &wrong, t0).unwrap_err();
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        }
        // when a calls again, even with the right key, then it is refused (429),
        let r = keys.check_from(Some(a), &right, t0).unwrap_err();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(r.headers().contains_key("retry-after"));
        // while b is not affected, and a may try again once a second has passed.
        assert!(keys.check_from(Some(b), &right, t0).is_ok());
        let later = t0 + Duration::from_millis(1_100);
        assert!(keys.check_from(Some(a), &right, later).is_ok());
        // A success does not count against the source.
        for _ in 0..20 {
            assert!(keys.check_from(Some(b), &right, later).is_ok());
        }
    }

    #[test]
    fn the_failure_table_stays_bounded_under_a_flood_of_sources() {
        let keys = ApiKeys::parse(&format!("shop:{}", hash_key("right")), 1.0).unwrap();
        let wrong = headers("x-api-key", "guess");
        let t0 = Instant::now();
        for i in 0..(FAILURE_SOURCES as u32 + 500) {
            let ip = std::net::IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            let _ = keys.check_from(Some(ip), &wrong, t0);
        }
        let n = keys.failures.lock().unwrap().by_source.len();
        assert!(n <= FAILURE_SOURCES, "{n} sources remembered");
    }

    #[test]
    fn bad_key_lines_fail_at_start() {
        for bad in [
            "shop",
            "shop:abc",
            ":00",
            &format!("shop:{}:fast", hash_key("x")),
            &format!("shop:{}:0", hash_key("x")),
            &format!("a:{h}\na:{h}", h = hash_key("x")),
            &format!("a:{}:5:colour=red", hash_key("x")),
            &format!("a:{}:role=root", hash_key("x")),
            &format!("a:{}:account=x:account=y", hash_key("x")),
            &format!("a:{}:senders=A,,B", hash_key("x")),
            &format!("a:{}:account=x:7", hash_key("x")),
            &format!("a:{}:accounts=smsgw-optout", hash_key("x")),
        ] {
            assert!(ApiKeys::parse(bad, 1.0).is_err(), "{bad}");
        }
        assert!(ApiKeys::parse("", 1.0).unwrap().is_empty());
    }

    fn caller_of(line: &str) -> Caller {
        let keys = ApiKeys::parse(line, 100.0).unwrap();
        keys.check(&headers("x-api-key", "k"), Instant::now())
            .unwrap()
    }

    #[test]
    fn given_a_key_with_an_account_and_senders_then_claims_outside_them_are_refused() {
        let agency = caller_of(&format!(
            "agency-key:{}:50:account=agency:accounts=shop,bank:senders=SHOP,BANK",
            hash_key("k")
        ));
        assert_eq!(agency.name, "agency-key");
        assert_eq!(agency.client_id(None).unwrap(), "agency");
        assert_eq!(agency.client_id(Some("bank".into())).unwrap(), "bank");
        assert!(agency.client_id(Some("victim".into())).is_err());
        assert!(agency.may_send_as("SHOP") && !agency.may_send_as("VICTIM"));
        assert!(agency.may_manage_scope("account:shop"));
        assert!(agency.may_manage_scope("sender:BANK"));
        assert!(!agency.may_manage_scope("account:victim"));
        assert!(!agency.may_manage_scope("sender:VICTIM"));
        assert!(!agency.may_manage_scope("global"));
    }

    #[test]
    fn given_a_plain_key_then_it_is_its_own_account_any_sender_and_no_sender_list() {
        let shop = caller_of(&format!("shop:{}", hash_key("k")));
        assert_eq!(shop.client_id(None).unwrap(), "shop");
        assert!(shop.client_id(Some("other".into())).is_err());
        assert!(shop.may_send_as("ANYTHING"));
        assert!(shop.may_manage_scope("account:shop"));
        assert!(!shop.may_manage_scope("sender:ANYTHING"));
        assert!(!shop.may_manage_scope("global") && !shop.admin);
        let admin = caller_of(&format!("ops:{}:role=admin", hash_key("k")));
        assert!(admin.may_manage_scope("global") && admin.may_manage_scope("sender:X"));
        assert!(
            !admin.may_act_for("shop"),
            "admin manages lists, not accounts"
        );
    }

    #[test]
    fn with_auth_disabled_anything_may_be_claimed() {
        let open = Caller::anonymous();
        assert_eq!(open.client_id(None).unwrap(), "http");
        assert_eq!(open.client_id(Some("x".into())).unwrap(), "x");
        assert!(open.may_manage_scope("global"));
    }
}
