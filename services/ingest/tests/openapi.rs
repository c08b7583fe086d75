//! The HTTP API serves exactly the routes docs/openapi.yaml documents, and its /v1
//! routes refuse calls without a valid API key (401), over the key's rate (429).

use axum::body::Body;
use axum::http::{Request, StatusCode};
use smsgw_ingest::http::{router, ApiState, ROUTES};
use smsgw_kafka::{KafkaConfig, Producer};
use smsgw_runtime::auth::{hash_key, ApiKeys};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use tower::ServiceExt;

/// (METHOD, path) pairs under `paths:` of the OpenAPI document (2-space path keys,
/// 4-space method keys).
fn documented() -> BTreeSet<(String, String)> {
    let doc = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.yaml");
    let text = std::fs::read_to_string(doc).unwrap();
    let paths = text.split_once("\npaths:\n").expect("a paths section").1;
    let mut out = BTreeSet::new();
    let mut current = None;
    for line in paths.lines() {
        if let Some(p) = line.strip_prefix("  /") {
            current = Some(format!("/{}", p.trim_end_matches(':')));
        } else if let Some(m) = line.strip_prefix("    ").and_then(|l| l.strip_suffix(':')) {
            if ["get", "post", "put", "delete", "patch"].contains(&m) {
                out.insert((m.to_uppercase(), current.clone().unwrap()));
            }
        } else if !line.starts_with(' ') && !line.is_empty() {
            break;
        }
    }
    out
}

fn app(keys: ApiKeys) -> axum::Router {
    let kafka = KafkaConfig::new("127.0.0.1:1");
    let metrics = smsgw_ingest::metrics::Metrics::new();
    let state = ApiState {
        producer: Producer::new(&kafka).unwrap(),
        topics: kafka.topics.clone(),
        shared: Arc::new(smsgw_ingest::view::Shared::new(10, 10)),
        limits: Default::default(),
        default_country: None,
        metrics: metrics.clone(),
        keys,
        quotas: Default::default(),
    };
    router(state)
}

async fn call(
    app: &axum::Router,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: &str,
) -> (StatusCode, String) {
    let mut r = Request::builder().method(method).uri(path);
    if let Some(k) = key {
        r = r.header("authorization", format!("Bearer {k}"));
    }
    let r = r
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let resp = app.clone().oneshot(r).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

#[tokio::test]
async fn served_routes_are_the_documented_routes() {
    let served: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(served, documented(), "docs/openapi.yaml and ROUTES differ");
    let app = app(ApiKeys::parse("", 1.0).unwrap());
    for (method, path) in &served {
        let path = path.replace("{id}", "no-such-id");
        let (status, body) = call(&app, method, &path, None, "{").await;
        // A served route answers from its handler: never the router's bare 404 or 405.
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert!(
            status != StatusCode::NOT_FOUND || !body.is_empty(),
            "{method} {path} is not served"
        );
    }
    // And nothing undocumented is: metrics and probes are on the admin port, not the
    // API's.
    for path in ["/v1/nope", "/metrics", "/healthz", "/readyz"] {
        assert_eq!(
            call(&app, "GET", path, None, "").await.0,
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    assert_eq!(
        call(&app, "PUT", "/v1/messages/x", None, "").await.0,
        StatusCode::METHOD_NOT_ALLOWED
    );
}

#[tokio::test]
async fn v1_routes_need_a_key_and_respect_its_rate() {
    let keys = ApiKeys::parse(
        &format!("shop:{}:2", hash_key("shop-key-0123456789")),
        100.0,
    )
    .unwrap();
    let app = app(keys);
    let (status, body) = call(&app, "POST", "/v1/messages", None, "{").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains("unauthenticated"), "{body}");
    let (status, body) = call(&app, "GET", "/v1/messages/x", Some("wrong-key"), "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains("invalid_api_key"), "{body}");
    // A good key reaches the handler (here: malformed JSON, 400).
    let key = Some("shop-key-0123456789");
    assert_eq!(
        call(&app, "POST", "/v1/messages", key, "{").await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        call(&app, "POST", "/v1/messages", key, "{").await.0,
        StatusCode::BAD_REQUEST
    );
    let (status, body) = call(&app, "POST", "/v1/messages", key, "{").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    // Health and metrics stay open, on the admin port (its router has no key check).
    let admin = smsgw_runtime::admin_router(
        smsgw_ingest::metrics::Metrics::new().registry,
        smsgw_runtime::Health::default(),
    );
    assert_eq!(
        call(&admin, "GET", "/healthz", None, "").await.0,
        StatusCode::OK
    );
    assert_eq!(
        call(&admin, "GET", "/metrics", None, "").await.0,
        StatusCode::OK
    );
}

/// Identifiers are bounded before use (issue 16): a 500 KB idempotency key (or client id)
/// is refused with 422 before anything is derived from it or written. The broker here is
/// unreachable, so a request that reached the producer would not be answered at once.
#[tokio::test]
async fn over_long_identifiers_are_refused_before_they_are_used() {
    let app = app(ApiKeys::parse("", 1.0).unwrap());
    let huge = "k".repeat(500_000);
    for body in [
        format!(r#"{{"to":"+447911123456","from":"SHOP","body":"x","idempotency_key":"{huge}"}}"#),
        format!(r#"{{"to":"+447911123456","from":"SHOP","body":"x","client_id":"{huge}"}}"#),
    ] {
        let (status, text) = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            call(&app, "POST", "/v1/messages", None, &body),
        )
        .await
        .expect("answered at once, without waiting for the broker");
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{text}");
        assert!(text.contains("field_too_long"), "{text}");
        assert!(
            text.len() < 1_000,
            "the answer does not echo the key: {} bytes",
            text.len()
        );
    }
}
