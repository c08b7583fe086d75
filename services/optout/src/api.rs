//! The opt-out API. Every change is a record on the opt-out log carrying who made it
//! (`X-Actor` header, else `api`), when, and its source (`api` or `import`); reads come
//! from this service's copy of the log, which also takes its own writes at once.
//!
//! - `PUT /v1/optouts/{scope}/{number}`: opt out (200 with the record)
//! - `DELETE /v1/optouts/{scope}/{number}`: opt back in
//! - `GET /v1/optouts/{scope}/{number}`: the current state and its last change
//! - `GET /v1/optouts?scope=&after=&limit=`: opted-out numbers, paged by number
//! - `POST /v1/optouts/import?scope=`: CSV `number[,action]` (action `opt_out`, the
//!   default, or `opt_in`), a result per line
//!
//! Scopes: `global`, `sender:<id>`, `account:<name>`. Numbers are E.164 (`+` and digits).
//! `X-Source: carrier` marks changes that come from a carrier's list (source `carrier`).

use crate::metrics::Metrics;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use smsgw_codec::OptOutChanged;
use smsgw_kafka::{now_ms, OutRecord, Producer, Topics};
use smsgw_runtime::auth::{caller_of, Caller};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// This service's copy of the opt-out log: the latest record per key.
#[derive(Debug, Default)]
pub struct View {
    latest: BTreeMap<String, OptOutChanged>,
}

impl View {
    /// Applies a record if it is not older than what is known for its key.
    pub fn apply(&mut self, c: OptOutChanged) {
        let key = c.key();
        if self
            .latest
            .get(&key)
            .is_none_or(|old| old.changed_at <= c.changed_at)
        {
            self.latest.insert(key, c);
        }
    }

    /// The last change for a scope and number.
    pub fn get(&self, scope: &str, number: &str) -> Option<&OptOutChanged> {
        self.latest.get(&smsgw_codec::optout_key(scope, number))
    }

    /// Opted-out numbers of a scope after `after`, at most `limit`.
    pub fn list(&self, scope: &str, after: &str, limit: usize) -> Vec<&OptOutChanged> {
        let start = smsgw_codec::optout_key(scope, after);
        let prefix = format!("{scope}|");
        self.latest
            .range(start..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(_, v)| v)
            .filter(|v| v.opted_out && v.number.as_str() > after)
            .take(limit)
            .collect()
    }
}

/// Shared by the handlers.
#[derive(Clone)]
pub struct ApiState {
    /// Producer for the opt-out log.
    pub producer: Producer,
    /// Topic names.
    pub topics: Topics,
    /// The copy of the log.
    pub view: Arc<Mutex<View>>,
    /// Metrics.
    pub metrics: Metrics,
    /// API keys (empty: open).
    pub keys: smsgw_runtime::auth::ApiKeys,
}

/// The routes, behind the API-key check.
pub fn router(state: ApiState) -> Router {
    let keys = state.keys.clone();
    keys.protect(
        Router::new()
            .route("/v1/optouts", get(list))
            .route("/v1/optouts/import", post(import))
            .route(
                "/v1/optouts/{scope}/{number}",
                get(check).put(add).delete(remove),
            ),
    )
    .with_state(state)
}

fn error(code: StatusCode, reason: &str, detail: impl Into<String>) -> Response {
    (
        code,
        Json(json!({"error": reason, "detail": detail.into()})),
    )
        .into_response()
}

/// Checks a scope: `global`, `sender:<id>` or `account:<name>`.
pub fn valid_scope(scope: &str) -> Result<(), String> {
    let ok = scope == smsgw_codec::GLOBAL_SCOPE
        || ["sender:", "account:"].iter().any(|p| {
            scope
                .strip_prefix(p)
                .is_some_and(|rest| !rest.trim().is_empty() && !rest.contains('|'))
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "scope {scope:?} must be global, sender:<id> or account:<name>"
        ))
    }
}

/// A number in E.164 (`+` and 8 to 15 digits), normalised; spaces and dashes are dropped.
pub fn valid_number(number: &str) -> Result<String, String> {
    let n: String = number
        .trim()
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '(' | ')'))
        .collect();
    let digits = n.strip_prefix('+').unwrap_or("");
    if (8..=15).contains(&digits.len()) && digits.chars().all(|c| c.is_ascii_digit()) {
        Ok(n)
    } else {
        Err(format!(
            "{number:?} is not an E.164 number (+ and 8-15 digits)"
        ))
    }
}

/// The audit actor of a change: the key's name (`api` with authentication disabled).
/// Never a header: a caller cannot write someone else's name into the audit trail.
fn actor(caller: &Caller) -> String {
    if caller.open {
        "api".into()
    } else {
        caller.name.clone()
    }
}

/// The source of an API change: `api`, or `carrier` when an admin key says with
/// `X-Source: carrier` that the list came from a carrier (imports are `import` unless
/// such a key says `carrier`). Other keys' `X-Source` is ignored.
fn source(headers: &HeaderMap, caller: &Caller, default: &'static str) -> &'static str {
    match headers.get("x-source").and_then(|v| v.to_str().ok()) {
        Some(s) if s.eq_ignore_ascii_case("carrier") && caller.admin => "carrier",
        _ => default,
    }
}

/// 403 unless `caller` may read and change the list `scope`.
fn authorize(caller: &Caller, scope: &str) -> Result<(), Box<Response>> {
    if caller.may_manage_scope(scope) {
        return Ok(());
    }
    Err(Box::new(error(
        StatusCode::FORBIDDEN,
        "forbidden_scope",
        format!(
            "key {} may not manage {:?} (global needs an admin key; sender: and account: \
             lists need the sender or account on the key)",
            caller.name,
            smsgw_runtime::clip_str(scope, 64)
        ),
    )))
}

fn change(
    scope: &str,
    number: &str,
    opted_out: bool,
    source: &str,
    actor: &str,
    reference: String,
) -> OptOutChanged {
    OptOutChanged {
        scope: scope.to_string(),
        number: number.to_string(),
        opted_out,
        source: source.into(),
        changed_at: now_ms(),
        actor: Some(actor.to_string()),
        reference: Some(reference),
    }
}

/// Writes changes to the opt-out log, all enqueued before any is awaited.
async fn write(s: &ApiState, changes: &[OptOutChanged]) -> Result<(), String> {
    let mut acks = Vec::with_capacity(changes.len());
    for c in changes {
        let rec = OutRecord::avro(s.topics.optout(), c.key(), c).map_err(|e| e.to_string())?;
        acks.push(s.producer.enqueue(&rec).await.map_err(|e| e.to_string())?);
    }
    for a in acks {
        match a.await {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => return Err(e.to_string()),
            Err(_) => return Err("delivery cancelled".into()),
        }
    }
    let mut view = s.view.lock().unwrap_or_else(|p| p.into_inner());
    for c in changes {
        view.apply(c.clone());
    }
    Ok(())
}

async fn set(
    s: ApiState,
    scope: String,
    number: String,
    headers: HeaderMap,
    caller: Caller,
    opted_out: bool,
) -> Response {
    if let Err(e) = valid_scope(&scope) {
        return error(StatusCode::BAD_REQUEST, "invalid_scope", e);
    }
    if let Err(r) = authorize(&caller, &scope) {
        return *r;
    }
    let number = match valid_number(&number) {
        Ok(n) => n,
        Err(e) => return error(StatusCode::BAD_REQUEST, "invalid_number", e),
    };
    let c = change(
        &scope,
        &number,
        opted_out,
        source(&headers, &caller, "api"),
        &actor(&caller),
        uuid::Uuid::new_v4().to_string(),
    );
    match write(&s, std::slice::from_ref(&c)).await {
        Ok(()) => {
            let kind = if opted_out { "opt_out" } else { "opt_in" };
            s.metrics
                .changes
                .with_label_values(&[kind, &c.source])
                .inc();
            (StatusCode::OK, Json(record_json(&c))).into_response()
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, "not_stored", e),
    }
}

fn record_json(c: &OptOutChanged) -> serde_json::Value {
    json!({
        "scope": c.scope, "number": c.number, "opted_out": c.opted_out,
        "source": c.source, "actor": c.actor, "reference": c.reference,
        "changed_at": c.changed_at,
    })
}

async fn add(
    State(s): State<ApiState>,
    Path((scope, number)): Path<(String, String)>,
    caller: Option<axum::Extension<Caller>>,
    headers: HeaderMap,
) -> Response {
    set(s, scope, number, headers, caller_of(caller), true).await
}

async fn remove(
    State(s): State<ApiState>,
    Path((scope, number)): Path<(String, String)>,
    caller: Option<axum::Extension<Caller>>,
    headers: HeaderMap,
) -> Response {
    set(s, scope, number, headers, caller_of(caller), false).await
}

async fn check(
    State(s): State<ApiState>,
    Path((scope, number)): Path<(String, String)>,
    caller: Option<axum::Extension<Caller>>,
) -> Response {
    if let Err(e) = valid_scope(&scope) {
        return error(StatusCode::BAD_REQUEST, "invalid_scope", e);
    }
    if let Err(r) = authorize(&caller_of(caller), &scope) {
        return *r;
    }
    let number = match valid_number(&number) {
        Ok(n) => n,
        Err(e) => return error(StatusCode::BAD_REQUEST, "invalid_number", e),
    };
    let view = s.view.lock().unwrap_or_else(|p| p.into_inner());
    match view.get(&scope, &number) {
        Some(c) => Json(record_json(c)).into_response(),
        None => Json(json!({"scope": scope, "number": number, "opted_out": false})).into_response(),
    }
}

/// Query of the list.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Scope to list.
    pub scope: String,
    /// Numbers after this one (for the next page).
    #[serde(default)]
    pub after: String,
    /// Page size (at most 1000).
    #[serde(default = "page")]
    pub limit: usize,
}

fn page() -> usize {
    100
}

async fn list(
    State(s): State<ApiState>,
    Query(q): Query<ListQuery>,
    caller: Option<axum::Extension<Caller>>,
) -> Response {
    if let Err(e) = valid_scope(&q.scope) {
        return error(StatusCode::BAD_REQUEST, "invalid_scope", e);
    }
    if let Err(r) = authorize(&caller_of(caller), &q.scope) {
        return *r;
    }
    let view = s.view.lock().unwrap_or_else(|p| p.into_inner());
    let items: Vec<_> = view
        .list(&q.scope, &q.after, q.limit.clamp(1, 1000))
        .into_iter()
        .map(record_json)
        .collect();
    let next = items.last().map(|i| i["number"].clone());
    Json(json!({"scope": q.scope, "items": items, "next_after": next})).into_response()
}

/// Query of an import.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportQuery {
    /// Scope of every line.
    pub scope: String,
}

/// Most lines in one import.
pub const MAX_IMPORT_LINES: usize = 100_000;

/// Import lines read: (number, opted out) pairs, and errors by line (1-based).
pub type Parsed = (Vec<(String, bool)>, Vec<(usize, String)>);

/// Reads an import: `number[,action]` per line, an optional `number` header, blank
/// lines skipped.
pub fn parse_csv(text: &str) -> Parsed {
    let (mut ok, mut bad) = (Vec::new(), Vec::new());
    for (i, line) in text.lines().enumerate() {
        let mut cols = line.split(',').map(|c| c.trim().trim_matches('"'));
        let number = cols.next().unwrap_or("");
        if number.is_empty() || (i == 0 && number.eq_ignore_ascii_case("number")) {
            continue;
        }
        let opted_out = match cols.next().map(str::to_ascii_lowercase).as_deref() {
            None | Some("") | Some("opt_out") | Some("stop") => true,
            Some("opt_in") | Some("start") => false,
            Some(other) => {
                bad.push((i + 1, format!("action {other:?} must be opt_out or opt_in")));
                continue;
            }
        };
        match valid_number(number) {
            Ok(n) => ok.push((n, opted_out)),
            Err(e) => bad.push((i + 1, e)),
        }
    }
    (ok, bad)
}

async fn import(
    State(s): State<ApiState>,
    Query(q): Query<ImportQuery>,
    caller: Option<axum::Extension<Caller>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let caller = caller_of(caller);
    if let Err(e) = valid_scope(&q.scope) {
        return error(StatusCode::BAD_REQUEST, "invalid_scope", e);
    }
    if let Err(r) = authorize(&caller, &q.scope) {
        return *r;
    }
    if body.lines().count() > MAX_IMPORT_LINES {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_lines",
            format!("at most {MAX_IMPORT_LINES} lines per import"),
        );
    }
    let (rows, errors) = parse_csv(&body);
    let import_id = uuid::Uuid::new_v4().to_string();
    let who = actor(&caller);
    let changes: Vec<OptOutChanged> = rows
        .iter()
        .map(|(n, out)| {
            change(
                &q.scope,
                n,
                *out,
                source(&headers, &caller, "import"),
                &who,
                import_id.clone(),
            )
        })
        .collect();
    if let Err(e) = write(&s, &changes).await {
        return error(StatusCode::SERVICE_UNAVAILABLE, "not_stored", e);
    }
    s.metrics
        .changes
        .with_label_values(&["bulk", "import"])
        .inc_by(changes.len() as u64);
    let errors: Vec<_> = errors
        .into_iter()
        .map(|(line, e)| json!({"line": line, "error": e}))
        .collect();
    Json(json!({"import_id": import_id, "imported": changes.len(), "errors": errors}))
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_lines_are_read_and_bad_ones_reported() {
        let (ok, bad) = parse_csv(
            "number,action\n+447911100001\n+44 7911 100002,opt_in\n\n447911100003\n+447911100004,maybe\n\"+447911100005\",stop\n",
        );
        assert_eq!(
            ok,
            vec![
                ("+447911100001".into(), true),
                ("+447911100002".into(), false),
                ("+447911100005".into(), true)
            ]
        );
        assert_eq!(bad.iter().map(|(l, _)| *l).collect::<Vec<_>>(), vec![5, 6]);
    }

    #[test]
    fn scopes_and_numbers_are_checked() {
        for ok in ["global", "sender:SHOP", "account:acme"] {
            assert!(valid_scope(ok).is_ok(), "{ok}");
        }
        for bad in ["", "sender:", "account: ", "pool:x", "sender:a|b", "GLOBAL"] {
            assert!(valid_scope(bad).is_err(), "{bad}");
        }
        assert_eq!(valid_number(" +44 7911-100001 ").unwrap(), "+447911100001");
        assert!(valid_number("447911100001").is_err());
        assert!(valid_number("+44abc").is_err());
    }

    fn c(scope: &str, number: &str, opted_out: bool, at: i64) -> OptOutChanged {
        OptOutChanged {
            scope: scope.into(),
            number: number.into(),
            opted_out,
            source: "api".into(),
            changed_at: at,
            actor: None,
            reference: None,
        }
    }

    #[test]
    fn the_view_keeps_the_latest_and_lists_by_page() {
        let mut v = View::default();
        v.apply(c("global", "+1000000002", true, 5));
        v.apply(c("global", "+1000000002", false, 3)); // older: ignored
        v.apply(c("global", "+1000000001", true, 1));
        v.apply(c("global", "+1000000003", false, 1));
        v.apply(c("sender:A", "+1000000004", true, 1));
        assert!(v.get("global", "+1000000002").unwrap().opted_out);
        let numbers =
            |items: Vec<&OptOutChanged>| items.iter().map(|c| c.number.clone()).collect::<Vec<_>>();
        assert_eq!(
            numbers(v.list("global", "", 10)),
            vec!["+1000000001", "+1000000002"]
        );
        assert_eq!(
            numbers(v.list("global", "+1000000001", 10)),
            vec!["+1000000002"]
        );
        assert_eq!(numbers(v.list("global", "", 1)), vec!["+1000000001"]);
        assert_eq!(numbers(v.list("sender:A", "", 10)), vec!["+1000000004"]);
    }
}
