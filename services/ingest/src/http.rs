//! The HTTP API: `POST /v1/messages`, `GET /v1/messages/{id}`.

use crate::config::Limits;
use crate::handler::id_for_key;
use crate::metrics::Metrics;
use crate::validate::validate;
use crate::view::Shared;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use smsgw_codec::SubmitRequest;
use smsgw_domain::{EventPayload, Message};
use smsgw_kafka::{now_ms, send, OutRecord, Producer, Topics};
use smsgw_runtime::auth::{caller_of, Caller};
use std::sync::Arc;

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct ApiState {
    /// Producer for the ingest topic.
    pub producer: Producer,
    /// Topic names.
    pub topics: Topics,
    /// View of the event log.
    pub shared: Arc<Shared>,
    /// Validation limits (to answer 422 at once).
    pub limits: Limits,
    /// Country for national numbers.
    pub default_country: Option<phonenumber::country::Id>,
    /// Metrics.
    pub metrics: Metrics,
    /// API keys (empty: open).
    pub keys: smsgw_runtime::auth::ApiKeys,
    /// Daily quotas per account.
    pub quotas: Arc<std::sync::Mutex<crate::quota::Quotas>>,
}

/// Body of `POST /v1/messages`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostMessage {
    /// Recipient.
    pub to: String,
    /// Sender id.
    pub from: String,
    /// Text.
    pub body: String,
    /// Upstream application; else the `X-Client-Id` header; else `http`.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Idempotency key; else the `Idempotency-Key` header.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// Client reference.
    #[serde(default)]
    pub client_ref: Option<String>,
    /// Ask for a delivery receipt (unset: the carrier's setting).
    #[serde(default)]
    pub registered_delivery: Option<bool>,
    /// Seconds the message stays worth delivering.
    #[serde(default)]
    pub validity_period_s: Option<i32>,
    /// Have the carrier deliver at this time (Unix ms).
    #[serde(default)]
    pub schedule_delivery_at: Option<i64>,
    /// Status callbacks for this message go here (https).
    #[serde(default)]
    pub callback_url: Option<String>,
    /// Hold the message in the gateway until this time (Unix ms).
    #[serde(default)]
    pub send_at: Option<i64>,
    /// `transactional` (default), `promotional` or `otp`.
    #[serde(default)]
    pub message_type: Option<String>,
}

/// Every route ingest serves (method, path), as `docs/openapi.yaml` documents them.
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "/v1/messages"),
    ("POST", "/v1/messages/batch"),
    ("GET", "/v1/messages/{id}"),
    ("DELETE", "/v1/messages/{id}"),
];

/// The API routes, behind the API-key check.
pub fn router(state: ApiState) -> Router {
    let keys = state.keys.clone();
    let limit = axum::extract::DefaultBodyLimit::max(state.limits.max_request_bytes);
    keys.protect(
        Router::new()
            .route("/v1/messages", post(post_message))
            .route("/v1/messages/batch", post(post_batch))
            .route("/v1/messages/{id}", get(get_message).delete(cancel_message)),
    )
    .layer(limit)
    .with_state(state)
}

/// A body that could not be read: 413 `too_large` past `limits.max_request_bytes` (the
/// body is not read beyond it), else 400 `invalid_json`.
fn unreadable(e: &axum::extract::rejection::JsonRejection) -> Response {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return error(StatusCode::PAYLOAD_TOO_LARGE, "too_large", e.body_text());
    }
    error(StatusCode::BAD_REQUEST, "invalid_json", e.body_text())
}

fn error(status: StatusCode, code: &str, reason: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"error": code, "reason": reason.into()})),
    )
        .into_response()
}

async fn post_message(
    State(st): State<ApiState>,
    caller: Option<axum::Extension<Caller>>,
    headers: HeaderMap,
    body: Result<Json<PostMessage>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let resp = post_inner(&st, &headers, &caller_of(caller), body).await;
    st.metrics
        .http
        .with_label_values(&["post_message", resp.status().as_str()])
        .inc();
    resp
}

/// One request made ready: the record for the ingest topic and what validation said.
struct Prepared {
    message_id: String,
    record: OutRecord,
    verdict: Result<smsgw_domain::MessageAccepted, crate::validate::Rejection>,
}

/// Whether `caller` may see message `m`: one of its accounts sent it.
fn visible(caller: &Caller, m: &Message) -> bool {
    caller.open
        || m.history().iter().any(|e| match &e.payload {
            EventPayload::Accepted(a) => caller.may_act_for(&a.client_id),
            EventPayload::Rejected(r) => caller.may_act_for(&r.client_id),
            _ => false,
        })
}

/// Turns a posted message into its ingest record: client id (body or `X-Client-Id`,
/// when the key may act for it; else the key's account), idempotency key (body,
/// `Idempotency-Key`), message id, and the validation verdict (invalid requests go to
/// the topic too, so that the event log records the rejection). `Err` for what cannot
/// even become a record, or what the key may not do (403).
fn prepare(
    st: &ApiState,
    headers: &HeaderMap,
    caller: &Caller,
    p: PostMessage,
) -> Result<Prepared, (StatusCode, &'static str, String)> {
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let claimed = p.client_id.or_else(|| header("x-client-id"));
    if let Some(c) = claimed
        .as_deref()
        .filter(|c| c.starts_with(crate::validate::RESERVED_CLIENT_PREFIX))
    {
        // The gateway's own replies bypass opt-outs: nobody else may send as them.
        let r = crate::validate::reserved_client(c);
        return Err((StatusCode::UNPROCESSABLE_ENTITY, r.code, r.reason));
    }
    // Identity comes from the key: a claimed account must be one the key may act for.
    let client_id = caller
        .client_id(claimed)
        .map_err(|reason| (StatusCode::FORBIDDEN, "forbidden_client", reason))?;
    if !caller.may_send_as(&p.from) {
        return Err((
            StatusCode::FORBIDDEN,
            "forbidden_sender",
            format!(
                "key {} may not send as {:?}",
                caller.name,
                smsgw_runtime::clip_str(&p.from, 32)
            ),
        ));
    }
    let idempotency_key = p.idempotency_key.or_else(|| header("idempotency-key"));
    // Before they are used as a Kafka key or in the message id: an over-long one is
    // refused here and never written anywhere.
    if let Err(r) = crate::validate::check_ids(
        &client_id,
        idempotency_key.as_deref(),
        p.client_ref.as_deref(),
        st.limits.max_id_len,
    ) {
        return Err((StatusCode::UNPROCESSABLE_ENTITY, r.code, r.reason));
    }
    // Only the SMPP server marks messages as an SMPP account's (their receipts go there).
    if p.client_ref
        .as_deref()
        .is_some_and(|r| r.starts_with(smsgw_codec::SMPP_CLIENT_REF_PREFIX))
    {
        return Err((
            StatusCode::UNPROCESSABLE_ENTITY,
            "reserved_client_ref",
            format!(
                "client_ref may not start with {:?}: it is reserved for messages submitted over SMPP",
                smsgw_codec::SMPP_CLIENT_REF_PREFIX
            ),
        ));
    }
    let message_id = match &idempotency_key {
        Some(k) => id_for_key(&client_id, k),
        None => uuid::Uuid::new_v4().to_string(),
    };
    let req = SubmitRequest {
        client_id,
        to: p.to,
        from: p.from,
        body: p.body,
        idempotency_key: idempotency_key.clone(),
        client_ref: p.client_ref,
        message_id: Some(message_id.clone()),
        registered_delivery: p.registered_delivery,
        validity_period_s: p.validity_period_s,
        schedule_delivery_at: p.schedule_delivery_at,
        callback_url: p.callback_url,
        send_at: p.send_at,
        message_type: p.message_type,
    };
    let verdict = validate(&req, &st.limits, st.default_country, now_ms());
    // A valid message counts against its account's quota for the day.
    if verdict.is_ok() {
        let admitted = st
            .quotas
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .admit(&req.client_id, now_ms());
        if let Err(q) = admitted {
            return Err((
                StatusCode::TOO_MANY_REQUESTS,
                "quota_exceeded",
                format!(
                    "account {:?} has used its daily quota of {} messages; it resets at {} (Unix ms, 00:00 UTC)",
                    smsgw_runtime::clip_str(&req.client_id, 64),
                    q.quota,
                    q.resets_at_ms
                ),
            ));
        }
    }
    let key = idempotency_key.unwrap_or_else(|| message_id.clone());
    let record = OutRecord::avro(st.topics.ingest(), key, &req)
        .map_err(|e| (StatusCode::BAD_REQUEST, "invalid_request", e.to_string()))?;
    Ok(Prepared {
        message_id,
        record,
        verdict,
    })
}

/// The answer for one stored request: 202 accepted or 422 rejected, with its body.
fn outcome(p: &Prepared) -> (StatusCode, Value) {
    match &p.verdict {
        Ok(a) => (
            StatusCode::ACCEPTED,
            json!({"id": p.message_id, "status": "accepted", "segments": a.segments, "encoding": a.encoding}),
        ),
        Err(r) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"id": p.message_id, "status": "rejected", "reason_code": r.code, "reason": r.reason}),
        ),
    }
}

const UNAVAILABLE: &str = "the ingest topic is not writable; retry with the same idempotency key";

async fn post_inner(
    st: &ApiState,
    headers: &HeaderMap,
    caller: &Caller,
    body: Result<Json<PostMessage>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(p) = match body {
        Ok(b) => b,
        Err(e) => return unreadable(&e),
    };
    let prepared = match prepare(st, headers, caller, p) {
        Ok(p) => p,
        Err((code, e, reason)) => return error(code, e, reason),
    };
    if let Err(e) = send(&st.producer, &prepared.record).await {
        tracing::error!(error = %e, "could not write to the ingest topic");
        return error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", UNAVAILABLE);
    }
    let (code, body) = outcome(&prepared);
    (code, Json(body)).into_response()
}

/// Body of `POST /v1/messages/batch`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostBatch {
    /// Up to [`MAX_BATCH`] messages, each as `POST /v1/messages` takes it.
    pub messages: Vec<PostMessage>,
}

/// Most messages in one batch.
pub const MAX_BATCH: usize = 1000;

async fn post_batch(
    State(st): State<ApiState>,
    caller: Option<axum::Extension<Caller>>,
    headers: HeaderMap,
    body: Result<Json<PostBatch>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let resp = batch_inner(&st, &headers, &caller_of(caller), body).await;
    st.metrics
        .http
        .with_label_values(&["post_batch", resp.status().as_str()])
        .inc();
    resp
}

async fn batch_inner(
    st: &ApiState,
    headers: &HeaderMap,
    caller: &Caller,
    body: Result<Json<PostBatch>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(batch) = match body {
        Ok(b) => b,
        Err(e) => return unreadable(&e),
    };
    if batch.messages.is_empty() || batch.messages.len() > MAX_BATCH {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_batch",
            format!(
                "a batch holds 1 to {MAX_BATCH} messages, not {}",
                batch.messages.len()
            ),
        );
    }
    // A batch of N costs the key N messages (the request itself was charged one).
    caller.charge(batch.messages.len() as u32 - 1, std::time::Instant::now());
    // Every item is written on its own (same validation and idempotency as a single
    // message); all are enqueued before any acknowledgement is awaited.
    let items: Vec<_> = batch
        .messages
        .into_iter()
        .map(|p| prepare(st, headers, caller, p))
        .collect();
    let mut acks = Vec::with_capacity(items.len());
    for item in &items {
        acks.push(match item {
            Ok(p) => Some(st.producer.enqueue(&p.record).await),
            Err(_) => None,
        });
    }
    let mut results = Vec::with_capacity(items.len());
    for (index, (item, ack)) in items.iter().zip(acks).enumerate() {
        let stored = match ack {
            Some(Ok(f)) => matches!(f.await, Ok(Ok(_))),
            _ => false,
        };
        results.push(match item {
            Err((code, e, reason)) => {
                json!({"index": index, "http_status": code.as_u16(), "error": e, "reason": reason})
            }
            Ok(_) if !stored => {
                json!({"index": index, "http_status": 503, "error": "unavailable", "reason": UNAVAILABLE})
            }
            Ok(p) => {
                let (code, mut body) = outcome(p);
                body["index"] = json!(index);
                body["http_status"] = json!(code.as_u16());
                body
            }
        });
    }
    let accepted = results.iter().filter(|r| r["status"] == "accepted").count();
    (
        StatusCode::OK,
        Json(json!({"accepted": accepted, "results": results})),
    )
        .into_response()
}

async fn get_message(
    State(st): State<ApiState>,
    Path(id): Path<String>,
    caller: Option<axum::Extension<Caller>>,
) -> Response {
    let caller = caller_of(caller);
    // Another account's message is answered exactly like one that does not exist.
    let found = st
        .shared
        .view
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(&id)
        .filter(|m| visible(&caller, m))
        .map(|m| render(&m));
    let resp = match found {
        Some(v) => (StatusCode::OK, Json(v)).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such message (yet): events may still be on their way",
        ),
    };
    st.metrics
        .http
        .with_label_values(&["get_message", resp.status().as_str()])
        .inc();
    resp
}

/// How long `DELETE` waits to say whether the cancellation won.
const CANCEL_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// `DELETE /v1/messages/{id}`: cancels a message that has not been submitted. The
/// router or the dispatcher, whichever reaches it first, stops it (`MessageCancelled`);
/// a message already past the dispatcher's last check is sent instead. The answer waits
/// (up to 5 s) for which happened: 200 cancelled, 409 already submitted (or final), or
/// 202 when neither is known yet.
async fn cancel_message(
    State(st): State<ApiState>,
    Path(id): Path<String>,
    caller: Option<axum::Extension<Caller>>,
) -> Response {
    let resp = cancel_inner(&st, &id, &caller_of(caller)).await;
    st.metrics
        .http
        .with_label_values(&["cancel_message", resp.status().as_str()])
        .inc();
    resp
}

/// The state of message `id`, if `caller` may see it.
fn state_of(st: &ApiState, id: &str, caller: &Caller) -> Option<smsgw_domain::State> {
    st.shared
        .view
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(id)
        .filter(|m| visible(caller, m))
        .map(|m| m.state())
}

/// The answer once the message's fate is known, or `None` while it is not.
fn cancel_verdict(id: &str, state: smsgw_domain::State) -> Option<Response> {
    use smsgw_domain::State as S;
    match state {
        S::Cancelled => Some(
            (
                StatusCode::OK,
                Json(json!({"id": id, "status": "cancelled"})),
            )
                .into_response(),
        ),
        S::Submitted | S::Delivered | S::Undeliverable => Some(error(
            StatusCode::CONFLICT,
            "already_submitted",
            format!(
                "message {id} was already submitted to a carrier ({})",
                state.as_str()
            ),
        )),
        s if s.is_terminal() => Some(error(
            StatusCode::CONFLICT,
            "already_final",
            format!("message {id} already ended as {}", s.as_str()),
        )),
        _ => None,
    }
}

async fn cancel_inner(st: &ApiState, id: &str, caller: &Caller) -> Response {
    // A message posted a moment ago may not be in the view yet: give it a second.
    let mut state = state_of(st, id, caller);
    let known_by = tokio::time::Instant::now() + std::time::Duration::from_secs(1);
    while state.is_none() && tokio::time::Instant::now() < known_by {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        state = state_of(st, id, caller);
    }
    let Some(state) = state else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no message {id}"),
        );
    };
    if let Some(r) = cancel_verdict(id, state) {
        return r;
    }
    let req = smsgw_codec::CancelRequested {
        message_id: id.to_string(),
        actor: (!caller.open).then(|| caller.name.clone()),
        requested_at: now_ms(),
    };
    let stored = match OutRecord::avro(st.topics.cancellations(), id.to_string(), &req) {
        Ok(rec) => send(&st.producer, &rec).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = stored {
        tracing::error!(error = %e, "could not write the cancellation");
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "retry the cancellation",
        );
    }
    let deadline = tokio::time::Instant::now() + CANCEL_WAIT;
    while tokio::time::Instant::now() < deadline {
        if let Some(r) = state_of(st, id, caller).and_then(|s| cancel_verdict(id, s)) {
            return r;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    (
        StatusCode::ACCEPTED,
        Json(json!({"id": id, "status": "cancel_requested"})),
    )
        .into_response()
}

/// The JSON form of a message: state, essentials, and the event history.
pub fn render(m: &Message) -> Value {
    let history: Vec<Value> = m
        .history()
        .iter()
        .map(|e| {
            let details = match &e.payload {
                EventPayload::Accepted(x) => serde_json::to_value(x),
                EventPayload::Rejected(x) => serde_json::to_value(x),
                EventPayload::CarrierSelected(x) => serde_json::to_value(x),
                EventPayload::Blocked(x) => serde_json::to_value(x),
                EventPayload::Submitted(x) => serde_json::to_value(x),
                EventPayload::SubmitFailed(x) => serde_json::to_value(x),
                EventPayload::Delivered(x) => serde_json::to_value(x),
                EventPayload::Undeliverable(x) => serde_json::to_value(x),
                EventPayload::Expired(x) => serde_json::to_value(x),
                EventPayload::Cancelled(x) => serde_json::to_value(x),
                EventPayload::DeliveryFailed(x) => serde_json::to_value(x),
            }
            .unwrap_or(Value::Null);
            json!({"event": e.payload.kind(), "event_id": e.event_id, "occurred_at_ms": e.occurred_at_ms, "details": details})
        })
        .collect();
    json!({
        "id": m.id(),
        "state": m.state().as_str(),
        "final": m.state().is_terminal(),
        "carrier": m.carrier(),
        "attempt": m.attempt(),
        "carrier_message_id": m.carrier_message_id(),
        "history": history,
    })
}
