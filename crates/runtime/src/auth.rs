//! API keys for the HTTP APIs (ingest's `/v1/messages`, optout's `/v1/optouts`).
//!
//! Keys are stored hashed: the configured `api_keys` text holds one key per line,
//! `name:sha256hex[:requests_per_second]` (the SHA-256 of the key, in hex). A caller
//! sends the key itself as `Authorization: Bearer <key>` or `X-Api-Key: <key>`; it is
//! hashed and compared in constant time. Each key has its own token bucket (burst equal
//! to its rate). Unauthenticated calls get 401, calls over the rate 429 with
//! `Retry-After`, both with a JSON `{"error", "reason"}`. The key's name is passed to
//! handlers as [`Caller`].

use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The authenticated caller (the key's name), put in the request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller(pub String);

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
    name: String,
    hash: [u8; 32],
    rate: f64,
    bucket: Mutex<(f64, Instant)>,
}

/// The configured keys.
#[derive(Debug, Clone)]
pub struct ApiKeys {
    keys: Arc<Vec<Key>>,
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
            let (name, hash, rate) = (parts.next(), parts.next(), parts.next());
            let bad = |why: &str| format!("api_keys line {}: {why}", i + 1);
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
            if keys.iter().any(|k: &Key| k.name == name) {
                return Err(bad("duplicate name"));
            }
            keys.push(Key {
                name: name.to_string(),
                hash,
                rate,
                bucket: Mutex::new((rate, Instant::now())),
            });
        }
        Ok(ApiKeys {
            keys: Arc::new(keys),
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
        let mut b = key.bucket.lock().unwrap_or_else(|p| p.into_inner());
        let tokens =
            (b.0 + now.saturating_duration_since(b.1).as_secs_f64() * key.rate).min(key.rate);
        if tokens < 1.0 {
            *b = (tokens, now);
            let wait = ((1.0 - tokens) / key.rate).ceil().max(1.0) as u64;
            let mut r = refuse(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "key {} is limited to {} requests per second",
                    key.name, key.rate
                ),
            );
            r.headers_mut()
                .insert("retry-after", wait.to_string().parse().expect("digits"));
            return Err(Box::new(r));
        }
        *b = (tokens - 1.0, now);
        Ok(Caller(key.name.clone()))
    }
}

fn refuse(code: StatusCode, error: &str, reason: impl Into<String>) -> Response {
    (
        code,
        axum::Json(serde_json::json!({"error": error, "reason": reason.into()})),
    )
        .into_response()
}

/// Middleware: lets a request through with its [`Caller`] when `keys` accept it; with no
/// keys configured, everything passes (as caller `anonymous`).
pub async fn require_key(
    axum::extract::State(keys): axum::extract::State<ApiKeys>,
    mut req: Request,
    next: Next,
) -> Response {
    let caller = if keys.is_empty() {
        Caller("anonymous".into())
    } else {
        match keys.check(req.headers(), Instant::now()) {
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
        assert_eq!(keys.check(&shop, t0).unwrap(), Caller("shop".into()));
        assert!(keys.check(&shop, t0).is_ok());
        let limited = keys.check(&shop, t0).unwrap_err();
        assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(limited.headers().contains_key("retry-after"));
        // The other key has its own bucket.
        assert_eq!(
            keys.check(&headers("x-api-key", "s3cret-crm"), t0).unwrap(),
            Caller("crm".into())
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
    fn bad_key_lines_fail_at_start() {
        for bad in [
            "shop",
            "shop:abc",
            ":00",
            &format!("shop:{}:fast", hash_key("x")),
            &format!("shop:{}:0", hash_key("x")),
            &format!("a:{h}\na:{h}", h = hash_key("x")),
        ] {
            assert!(ApiKeys::parse(bad, 1.0).is_err(), "{bad}");
        }
        assert!(ApiKeys::parse("", 1.0).unwrap().is_empty());
    }
}
