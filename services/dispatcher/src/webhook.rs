//! Webhooks that HTTP carriers call: delivery receipts
//! (`POST /v1/carriers/{carrier}/receipts`) and MO messages
//! (`POST /v1/carriers/{carrier}/mo`). Every call must carry an HMAC-SHA256 signature of
//! its body made with the carrier's secret; a call is answered 200 only once Kafka holds
//! what it said, so a carrier that sees an error retries. Unreadable payloads are
//! dead-lettered with the reason and answered 400.

use crate::config::CarrierConfig;
use crate::http::{secret, text_at, WebhookConfig};
use crate::metrics::Metrics;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use smsgw_codec::{CarrierRecord, CarrierRecordKind, DeadLetter, InboundMessage, ReceiptReceived};
use smsgw_kafka::{now_ms, send, OutRecord, Producer, Topics};
use std::collections::HashMap;
use std::sync::Arc;
use thiserror::Error;

/// Why a call was refused.
#[derive(Debug, Error, PartialEq)]
pub enum WebhookError {
    /// No or a wrong signature, or a stale timestamp: answered 401, counted.
    #[error("signature: {0}")]
    Unauthorized(String),
    /// The payload cannot be read: answered 400, dead-lettered.
    #[error("payload: {0}")]
    BadPayload(String),
}

/// Checks the signature of `body` and its timestamp (unless the carrier is configured
/// `allow_unstamped`); returns the verified signature, to refuse its replay.
pub fn verify(
    cfg: &WebhookConfig,
    key: &[u8],
    headers: &HeaderMap,
    body: &[u8],
    now_s: i64,
) -> Result<Vec<u8>, WebhookError> {
    let unauthorized = |m: &str| Err(WebhookError::Unauthorized(m.to_string()));
    let Some(sig) = headers
        .get(cfg.signature_header.as_str())
        .and_then(|v| v.to_str().ok())
    else {
        return unauthorized(&format!("missing {} header", cfg.signature_header));
    };
    let sig = sig.trim();
    let sig = sig.strip_prefix("sha256=").unwrap_or(sig);
    let Ok(sig) = hex::decode(sig) else {
        return unauthorized("signature is not hex");
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    if !cfg.allow_unstamped {
        let h = &cfg.timestamp_header;
        let Some(ts) = headers.get(h.as_str()).and_then(|v| v.to_str().ok()) else {
            return unauthorized(&format!("missing {h} header"));
        };
        let Ok(t) = ts.trim().parse::<i64>() else {
            return unauthorized("timestamp is not Unix seconds");
        };
        if (now_s - t).abs() > cfg.tolerance_s {
            return unauthorized("timestamp outside the tolerance (replayed or clock skew)");
        }
        mac.update(ts.trim().as_bytes());
        mac.update(b".");
    }
    mac.update(body);
    // Constant-time comparison.
    mac.verify_slice(&sig)
        .map_err(|_| WebhookError::Unauthorized("signature does not match".into()))?;
    Ok(sig)
}

/// Signatures accepted within the tolerance window, to refuse a replayed call (a
/// replayed MO "START" would re-subscribe a number). Pure: the clock is passed in. At
/// most `capacity` are kept, the oldest dropped first; a replica remembers only the calls
/// it took itself.
#[derive(Debug, Default)]
pub struct Replays {
    seen: std::collections::HashSet<Vec<u8>>,
    order: std::collections::VecDeque<(i64, Vec<u8>)>,
    capacity: usize,
}

impl Replays {
    /// Remembers at most `capacity` signatures.
    pub fn new(capacity: usize) -> Self {
        Replays {
            capacity,
            ..Default::default()
        }
    }

    /// Whether `sig` was accepted within the last `window_s` seconds before `now_s`.
    pub fn seen(&mut self, sig: &[u8], now_s: i64, window_s: i64) -> bool {
        while let Some((at, old)) = self.order.front() {
            if *at >= now_s - window_s && self.order.len() <= self.capacity {
                break;
            }
            self.seen.remove(old);
            self.order.pop_front();
        }
        self.seen.contains(sig)
    }

    /// Remembers an accepted `sig` at `now_s`.
    pub fn accept(&mut self, sig: Vec<u8>, now_s: i64) {
        if self.seen.insert(sig.clone()) {
            self.order.push_back((now_s, sig));
        }
    }
}

/// Most signatures a carrier's replay memory keeps.
const REPLAY_CAPACITY: usize = 100_000;

fn json_of(body: &[u8]) -> Result<serde_json::Value, WebhookError> {
    serde_json::from_slice(body).map_err(|e| WebhookError::BadPayload(format!("not JSON: {e}")))
}

fn field(v: &serde_json::Value, pointer: &str, what: &str) -> Result<String, WebhookError> {
    text_at(v, pointer)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| WebhookError::BadPayload(format!("no {what} at {pointer}")))
}

/// Reads a receipt.
pub fn parse_receipt(
    carrier: &str,
    cfg: &WebhookConfig,
    body: &[u8],
    now_ms: i64,
) -> Result<CarrierRecord, WebhookError> {
    let v = json_of(body)?;
    let id = field(&v, &cfg.receipt_id_pointer, "message id")?;
    let status = field(&v, &cfg.receipt_status_pointer, "status")?;
    let stat = cfg
        .statuses
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(&status))
        .map(|(_, s)| s.clone())
        .unwrap_or_else(|| status.to_ascii_uppercase());
    let error_code = cfg
        .receipt_error_pointer
        .as_deref()
        .and_then(|p| text_at(&v, p));
    Ok(CarrierRecord {
        carrier: carrier.to_string(),
        carrier_message_id: smsgw_smpp::normalize_message_id(&id),
        received_at: now_ms,
        kind: CarrierRecordKind::ReceiptReceived(ReceiptReceived {
            stat,
            error_code,
            raw_text: Some(String::from_utf8_lossy(body).chars().take(1000).collect()),
        }),
    })
}

/// Reads an MO message.
pub fn parse_mo(
    carrier: &str,
    cfg: &WebhookConfig,
    body: &[u8],
    now_ms: i64,
) -> Result<InboundMessage, WebhookError> {
    let v = json_of(body)?;
    let from = field(&v, &cfg.mo_from_pointer, "sender")?;
    let from = if from.len() > 8 && from.chars().all(|c| c.is_ascii_digit()) {
        format!("+{from}")
    } else {
        from
    };
    Ok(InboundMessage {
        inbound_id: uuid::Uuid::new_v4().to_string(),
        carrier: carrier.to_string(),
        from,
        to: field(&v, &cfg.mo_to_pointer, "recipient")?,
        body: text_at(&v, &cfg.mo_body_pointer).unwrap_or_default(),
        received_at: now_ms,
    })
}

struct Hook {
    cfg: WebhookConfig,
    key: Vec<u8>,
    replays: std::sync::Mutex<Replays>,
}

#[derive(Clone)]
struct AppState {
    hooks: Arc<HashMap<String, Hook>>,
    producer: Producer,
    topics: Topics,
    metrics: Metrics,
}

/// The carriers that take webhooks (resolving their secrets).
fn hooks(carriers: &[CarrierConfig]) -> Result<HashMap<String, Hook>, String> {
    carriers
        .iter()
        .filter_map(|c| {
            let w = c.http.as_ref()?.webhook.as_ref()?;
            Some(secret(&w.secret).map(|key| {
                (
                    c.name.clone(),
                    Hook {
                        cfg: w.clone(),
                        key: key.into_bytes(),
                        replays: std::sync::Mutex::new(Replays::new(REPLAY_CAPACITY)),
                    },
                )
            }))
        })
        .collect()
}

/// Whether any carrier has webhooks.
pub fn wanted(carriers: &[CarrierConfig]) -> bool {
    carriers
        .iter()
        .any(|c| c.http.as_ref().is_some_and(|h| h.webhook.is_some()))
}

/// The webhook routes.
pub fn router(
    carriers: &[CarrierConfig],
    producer: Producer,
    topics: Topics,
    metrics: Metrics,
) -> Result<Router, String> {
    let state = AppState {
        hooks: Arc::new(hooks(carriers)?),
        producer,
        topics,
        metrics,
    };
    Ok(Router::new()
        .route("/v1/carriers/{carrier}/receipts", post(receipt))
        .route("/v1/carriers/{carrier}/mo", post(mo))
        .with_state(state))
}

fn reply(code: StatusCode, message: &str) -> Response {
    (code, Json(serde_json::json!({ "error": message }))).into_response()
}

async fn receipt(
    State(s): State<AppState>,
    Path(carrier): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handle(s, carrier, headers, body, Kind::Receipt).await
}

async fn mo(
    State(s): State<AppState>,
    Path(carrier): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handle(s, carrier, headers, body, Kind::Mo).await
}

#[derive(Clone, Copy)]
enum Kind {
    Receipt,
    Mo,
}

async fn handle(
    s: AppState,
    carrier: String,
    headers: HeaderMap,
    body: Bytes,
    kind: Kind,
) -> Response {
    let Some(hook) = s.hooks.get(&carrier) else {
        return reply(StatusCode::NOT_FOUND, "no webhook for this carrier");
    };
    let count = |k: &str| s.metrics.inbound.with_label_values(&[&carrier, k]).inc();
    let now_s = now_ms() / 1000;
    let sig = match verify(&hook.cfg, &hook.key, &headers, &body, now_s) {
        Ok(sig) => sig,
        Err(e) => {
            count("bad_signature");
            tracing::warn!(carrier = %carrier, error = %e, "webhook call refused");
            return reply(StatusCode::UNAUTHORIZED, &e.to_string());
        }
    };
    let replays = || hook.replays.lock().unwrap_or_else(|p| p.into_inner());
    if !hook.cfg.allow_unstamped && replays().seen(&sig, now_s, 2 * hook.cfg.tolerance_s) {
        count("replayed");
        tracing::warn!(carrier = %carrier, "webhook call refused: a replay");
        return reply(
            StatusCode::UNAUTHORIZED,
            "replayed: this signed call was already taken",
        );
    }
    let now = now_ms();
    let (record, label) = match kind {
        Kind::Receipt => (
            parse_receipt(&carrier, &hook.cfg, &body, now)
                .map(|r| OutRecord::avro(s.topics.receipts(), r.key(), &r)),
            "receipt",
        ),
        Kind::Mo => (
            parse_mo(&carrier, &hook.cfg, &body, now)
                .map(|m| OutRecord::avro(s.topics.inbound(), m.from.clone(), &m)),
            "mo",
        ),
    };
    let record = match record {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return reply(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        Err(e) => {
            count(&format!("bad_{label}"));
            let dl = DeadLetter {
                service: "dispatcher".into(),
                reason: format!("unreadable {label} webhook: {e}"),
                topic: format!("http:{carrier}"),
                partition: -1,
                offset: -1,
                key: None,
                payload: Some(body.to_vec()),
                headers: Default::default(),
                failed_at: now,
            };
            if let Ok(rec) = OutRecord::avro(s.topics.dead_letter(), carrier.clone(), &dl) {
                if let Err(err) = send(&s.producer, &rec).await {
                    tracing::error!(error = %err, "dead letter not stored");
                    return reply(StatusCode::SERVICE_UNAVAILABLE, "try again");
                }
            }
            return reply(StatusCode::BAD_REQUEST, &e.to_string());
        }
    };
    match send(&s.producer, &record).await {
        Ok(()) => {
            // Remembered once stored: a carrier retrying after a 503 is not a replay.
            replays().accept(sig, now_s);
            count(label);
            (StatusCode::OK, Json(serde_json::json!({"ok": true}))).into_response()
        }
        Err(e) => {
            tracing::error!(carrier = %carrier, error = %e, "webhook payload not stored");
            reply(StatusCode::SERVICE_UNAVAILABLE, "not stored; try again")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> WebhookConfig {
        serde_json::from_str(&format!(r#"{{"secret":"s3cret"{extra}}}"#)).unwrap()
    }

    fn sign(key: &[u8], text: &[u8]) -> String {
        let mut m = Hmac::<Sha256>::new_from_slice(key).unwrap();
        m.update(text);
        hex::encode(m.finalize().into_bytes())
    }

    fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    /// A carrier signing with the openssl recipe docs/carriers.md prints is accepted: the
    /// vector was computed with `printf '%s.%s' "$ts" "$body" | openssl dgst -sha256
    /// -hmac carrier-secret -hex`, not with this code.
    #[test]
    fn a_carrier_signing_with_the_documented_openssl_recipe_is_accepted() {
        let c: WebhookConfig = serde_json::from_str(
            r#"{"secret":"carrier-secret","signature_header":"X-Carrier-Signature","timestamp_header":"X-Carrier-Timestamp"}"#,
        )
        .unwrap();
        let body = br#"{"data":{"ref":"12345","state":"delivered"}}"#;
        let sig = "3d7bbc6a3175533bec71fcf4a36c691b69d43b5b6362e413ecd42628fd56ae44";
        let h = headers(&[
            ("X-Carrier-Timestamp", "1764424800".into()),
            ("X-Carrier-Signature", format!("sha256={sig}")),
        ]);
        assert!(verify(&c, b"carrier-secret", &h, body, 1_764_424_800).is_ok());
        // One second of the timestamp or one byte of the body changed: refused.
        let later = headers(&[
            ("X-Carrier-Timestamp", "1764424801".into()),
            ("X-Carrier-Signature", format!("sha256={sig}")),
        ]);
        assert!(verify(&c, b"carrier-secret", &later, body, 1_764_424_800).is_err());
        let other = br#"{"data":{"ref":"12346","state":"delivered"}}"#;
        assert!(verify(&c, b"carrier-secret", &h, other, 1_764_424_800).is_err());
    }

    #[test]
    fn signatures_are_checked() {
        let c = cfg(r#","allow_unstamped":true"#);
        let body = br#"{"id":"a1","status":"delivered"}"#;
        let good = sign(b"s3cret", body);
        assert!(verify(
            &c,
            b"s3cret",
            &headers(&[("X-Signature", good.clone())]),
            body,
            0
        )
        .is_ok());
        let prefixed = format!("sha256={good}");
        assert!(verify(
            &c,
            b"s3cret",
            &headers(&[("x-signature", prefixed)]),
            body,
            0
        )
        .is_ok());
        let tampered = br#"{"id":"a2","status":"delivered"}"#;
        assert!(verify(
            &c,
            b"s3cret",
            &headers(&[("X-Signature", good.clone())]),
            tampered,
            0
        )
        .is_err());
        assert!(verify(&c, b"other", &headers(&[("X-Signature", good)]), body, 0).is_err());
        assert!(verify(&c, b"s3cret", &HeaderMap::new(), body, 0).is_err());
        assert!(verify(
            &c,
            b"s3cret",
            &headers(&[("X-Signature", "zz".into())]),
            body,
            0
        )
        .is_err());
    }

    #[test]
    fn given_the_default_config_when_a_call_has_no_timestamp_then_it_is_refused() {
        let c = cfg("");
        let body = br#"{"from":"+447911123456","to":"SHOP","text":"START"}"#;
        let h = headers(&[("X-Signature", sign(b"s3cret", body))]);
        assert!(matches!(
            verify(&c, b"s3cret", &h, body, 1000),
            Err(WebhookError::Unauthorized(m)) if m.contains("X-Timestamp")
        ));
    }

    #[test]
    fn given_an_accepted_call_when_it_is_replayed_within_the_window_then_it_is_seen() {
        let mut r = Replays::new(10);
        let sig = b"sig-of-a-START".to_vec();
        assert!(!r.seen(&sig, 1000, 600), "new");
        r.accept(sig.clone(), 1000);
        assert!(r.seen(&sig, 1299, 600), "replayed inside the window");
        // Past the window the timestamp check refuses it anyway; the memory lets go.
        assert!(!r.seen(&sig, 1601, 600));
        // Bounded: the oldest are dropped first.
        let mut r = Replays::new(2);
        for i in 0..3u8 {
            r.accept(vec![i], 1000);
        }
        assert!(!r.seen(&[0], 1000, 600));
        assert!(r.seen(&[2], 1000, 600));
    }

    #[test]
    fn timestamps_bind_the_signature_and_stop_replays() {
        let c = cfg(r#","timestamp_header":"X-Timestamp","tolerance_s":300"#);
        let body = b"{}";
        let sig = sign(b"s3cret", b"1000.{}");
        let h = headers(&[("X-Signature", sig), ("X-Timestamp", "1000".into())]);
        assert!(verify(&c, b"s3cret", &h, body, 1200).is_ok());
        assert!(verify(&c, b"s3cret", &h, body, 1301).is_err(), "stale");
        // The body alone signed does not pass when a timestamp is required.
        let h = headers(&[
            ("X-Signature", sign(b"s3cret", body)),
            ("X-Timestamp", "1000".into()),
        ]);
        assert!(verify(&c, b"s3cret", &h, body, 1000).is_err());
    }

    #[test]
    fn receipts_and_mo_are_read_by_their_pointers() {
        let c = cfg(
            r#","receipt_id_pointer":"/data/ref","receipt_status_pointer":"/data/state","receipt_error_pointer":"/data/err","statuses":{"delivered":"DELIVRD","failed":"UNDELIV"}"#,
        );
        let r = parse_receipt(
            "web",
            &c,
            br#"{"data":{"ref":"00AB","state":"Failed","err":7}}"#,
            5,
        )
        .unwrap();
        assert_eq!(r.carrier_message_id, "ab");
        match r.kind {
            CarrierRecordKind::ReceiptReceived(rr) => {
                assert_eq!(rr.stat, "UNDELIV");
                assert_eq!(rr.error_code.as_deref(), Some("7"));
            }
            other => panic!("{other:?}"),
        }
        let e = parse_receipt("web", &c, br#"{"data":{"state":"delivered"}}"#, 5).unwrap_err();
        assert!(matches!(e, WebhookError::BadPayload(m) if m.contains("/data/ref")));
        assert!(parse_receipt("web", &c, b"not json", 5).is_err());
        let m = parse_mo(
            "web",
            &c,
            br#"{"from":"447911100001","to":"SHOP","text":"STOP"}"#,
            5,
        )
        .unwrap();
        assert_eq!(
            (m.from.as_str(), m.body.as_str()),
            ("+447911100001", "STOP")
        );
        assert!(parse_mo("web", &c, br#"{"to":"SHOP"}"#, 5).is_err());
    }

    // Carrier webhook bodies and headers, arbitrary: 1,000 cases each.
    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1000))]

        /// Any body is read as a receipt or an MO, or refused with a reason; never a
        /// panic, and a receipt keeps at most 1,000 characters of the raw body.
        #[test]
        fn prop_any_body_is_read_or_refused(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..800),
            id in ".{0,200}",
            status in ".{0,50}",
        ) {
            let c = cfg(r#","receipt_id_pointer":"/id","receipt_status_pointer":"/status","mo_from_pointer":"/from","mo_to_pointer":"/to","mo_body_pointer":"/text""#);
            let _ = parse_mo("c", &c, &body, 0);
            if let Ok(r) = parse_receipt("c", &c, &body, 0) {
                if let CarrierRecordKind::ReceiptReceived(x) = r.kind {
                    proptest::prop_assert!(x.raw_text.map_or(0, |t| t.chars().count()) <= 1000);
                }
            }
            // Valid JSON with arbitrary field values.
            let json = serde_json::json!({"id": id, "status": status, "from": id, "to": status, "text": id});
            let bytes = serde_json::to_vec(&json).unwrap();
            proptest::prop_assert!(parse_receipt("c", &c, &bytes, 0).is_ok() || id.is_empty() || status.is_empty());
            let _ = parse_mo("c", &c, &bytes, 0);
        }

        /// Arbitrary signature and timestamp headers never verify, and never panic.
        #[test]
        fn prop_forged_signatures_are_refused(
            sig in ".{0,130}",
            ts in ".{0,20}",
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
        ) {
            let c = cfg("");
            let mut h = HeaderMap::new();
            if let Ok(v) = sig.parse() {
                h.insert("X-Signature", v);
            }
            if let Ok(v) = ts.parse() {
                h.insert("X-Timestamp", v);
            }
            proptest::prop_assert!(verify(&c, b"s3cret", &h, &body, 1_764_424_800).is_err());
        }
    }
}
