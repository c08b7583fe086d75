//! Admission: what a submitted message must be to be accepted, as pure functions.
//!
//! Data flow: every way a message comes in (ingest's topic reader and HTTP API, the
//! SMPP server) builds a `SubmitRequest` and calls [`validate`] with the configured
//! [`Limits`] and the clock; the answer is the `MessageAccepted` it becomes or a
//! [`Rejection`] with a stable code, which each front end maps to its own status (HTTP
//! 422, an SMPP `command_status`) and ingest records as `MessageRejected`. Nothing here
//! does I/O, so every rule is unit-tested.

pub mod quota;

use serde::Deserialize;
use smsgw_codec::SubmitRequest;
use smsgw_domain::{MessageAccepted, MessageRejected};

/// Request limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Longest body, in characters.
    #[serde(default = "default_max_chars")]
    pub max_body_chars: usize,
    /// Most SMS parts one message may take.
    #[serde(default = "default_max_segments")]
    pub max_segments: usize,
    /// Longest client id / idempotency key / client ref.
    #[serde(default = "default_max_id")]
    pub max_id_len: usize,
    /// Largest HTTP request body, in bytes (a batch of 1,000 messages of 1,000
    /// characters fits the default, 2 MiB); a larger one is refused with 413 before it
    /// is read whole.
    #[serde(default = "default_max_request_bytes")]
    pub max_request_bytes: usize,
    /// Validity given to requests that set none (seconds; unset: none, the message is
    /// chased until a final receipt or the receipt timeout).
    #[serde(default)]
    pub default_validity_s: Option<i32>,
    /// Longest `validity_period_s` a request may ask for.
    #[serde(default = "default_max_validity")]
    pub max_validity_s: i32,
    /// How far ahead `schedule_delivery_at` may be (s).
    #[serde(default = "default_max_schedule")]
    pub max_schedule_ahead_s: i64,
    /// Earliest a gateway-held `send_at` may be, seconds from now.
    #[serde(default = "default_min_send_at")]
    pub min_send_at_ahead_s: i64,
    /// Latest a gateway-held `send_at` may be, seconds from now.
    #[serde(default = "default_max_schedule")]
    pub max_send_at_ahead_s: i64,
    /// Allow `http://` callback URLs (only for loopback receivers in tests and demos);
    /// otherwise callback URLs must be `https://`.
    #[serde(default)]
    pub allow_http_callbacks: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_chars: default_max_chars(),
            max_segments: default_max_segments(),
            max_id_len: default_max_id(),
            max_request_bytes: default_max_request_bytes(),
            default_validity_s: None,
            max_validity_s: default_max_validity(),
            max_schedule_ahead_s: default_max_schedule(),
            min_send_at_ahead_s: default_min_send_at(),
            max_send_at_ahead_s: default_max_schedule(),
            allow_http_callbacks: false,
        }
    }
}

fn default_max_chars() -> usize {
    1_600
}
fn default_max_segments() -> usize {
    10
}
fn default_max_id() -> usize {
    128
}
fn default_max_request_bytes() -> usize {
    2 * 1024 * 1024
}
fn default_max_validity() -> i32 {
    7 * 24 * 3600
}
fn default_min_send_at() -> i64 {
    60
}
fn default_max_schedule() -> i64 {
    35 * 24 * 3600
}

/// Why a request was refused: a stable code and a sentence for humans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Machine-readable code.
    pub code: &'static str,
    /// Human-readable reason.
    pub reason: String,
}

/// The caller's identifiers (client id, idempotency key, client ref) are at most `max`
/// bytes each. Checked before any of them is used: as a Kafka key, in a message id, or
/// copied into an event.
pub fn check_ids(
    client_id: &str,
    idempotency_key: Option<&str>,
    client_ref: Option<&str>,
    max: usize,
) -> Result<(), Rejection> {
    for (name, v) in [
        ("client_id", Some(client_id)),
        ("idempotency_key", idempotency_key),
        ("client_ref", client_ref),
    ] {
        if v.is_some_and(|v| v.len() > max) {
            return Err(reject(
                "field_too_long",
                format!("{name} is longer than {max} bytes"),
            ));
        }
    }
    Ok(())
}

/// Most bytes of a caller's identifier a `MessageRejected` keeps (the rejection may be
/// that it is too long).
pub const REJECTED_ID_MAX: usize = 256;

/// Client ids that belong to the gateway itself (its opt-out replies are exempt from
/// opt-outs); no caller may use one, on any path.
pub const RESERVED_CLIENT_PREFIX: &str = "smsgw-";

/// The rejection of a request that claims a reserved client id (the id is quoted cut to
/// 64 bytes).
pub fn reserved_client(client_id: &str) -> Rejection {
    let shown = smsgw_runtime::clip_str(client_id, 64);
    reject(
        "reserved_client",
        format!("client_id {shown:?} is reserved for the gateway"),
    )
}

fn reject(code: &'static str, reason: impl Into<String>) -> Rejection {
    Rejection {
        code,
        reason: reason.into(),
    }
}

/// Parses a recipient to E.164 (`+` and digits), or says why it is not a number we can text.
pub fn parse_destination(
    raw: &str,
    default_country: Option<phonenumber::country::Id>,
) -> Result<String, Rejection> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(reject("invalid_destination", "destination is empty"));
    }
    let n = phonenumber::parse(default_country, raw).map_err(|e| {
        reject(
            "invalid_destination",
            format!("destination is not a phone number: {e}"),
        )
    })?;
    if !phonenumber::is_valid(&n) {
        return Err(reject(
            "invalid_destination",
            "destination is not a valid number for its country",
        ));
    }
    Ok(n.format().mode(phonenumber::Mode::E164).to_string())
}

/// A sender id: up to 15 digits (optionally with `+`), or 1-11 letters, digits and spaces
/// with at least one letter.
pub fn check_sender(s: &str) -> Result<(), Rejection> {
    let digits = s.strip_prefix('+').unwrap_or(s);
    if s.is_empty() {
        return Err(reject("invalid_sender", "sender id is empty"));
    }
    if digits.chars().all(|c| c.is_ascii_digit()) {
        return if (1..=15).contains(&digits.len()) {
            Ok(())
        } else {
            Err(reject(
                "invalid_sender",
                "numeric sender id must have 1 to 15 digits",
            ))
        };
    }
    let ok = s.chars().count() <= 11
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == ' ')
        && s.chars().any(|c| c.is_ascii_alphabetic());
    if ok {
        Ok(())
    } else {
        Err(reject(
            "invalid_sender",
            "alphanumeric sender id must be 1 to 11 letters, digits or spaces",
        ))
    }
}

/// Validates a request into the `MessageAccepted` it becomes, or a rejection.
pub fn validate(
    req: &SubmitRequest,
    limits: &Limits,
    default_country: Option<phonenumber::country::Id>,
    now_ms: i64,
) -> Result<MessageAccepted, Rejection> {
    if req.client_id.trim().is_empty() {
        return Err(reject("invalid_client", "client_id is empty"));
    }
    check_ids(
        &req.client_id,
        req.idempotency_key.as_deref(),
        req.client_ref.as_deref(),
        limits.max_id_len,
    )?;
    let destination = parse_destination(&req.to, default_country)?;
    check_sender(&req.from)?;
    if req.body.trim().is_empty() {
        return Err(reject("empty_body", "body is empty"));
    }
    let chars = req.body.chars().count();
    if chars > limits.max_body_chars {
        return Err(reject(
            "body_too_long",
            format!(
                "body has {chars} characters; the limit is {}",
                limits.max_body_chars
            ),
        ));
    }
    let a = smsgw_gsm::analyse(&req.body);
    if a.segments > limits.max_segments {
        return Err(reject(
            "body_too_long",
            format!(
                "body needs {} {} segments; the limit is {}",
                a.segments,
                a.encoding.as_str(),
                limits.max_segments
            ),
        ));
    }
    let message_type = match req.message_type.as_deref() {
        None => None,
        Some(t) if MESSAGE_TYPES.contains(&t) => Some(t.to_string()),
        Some(t) => {
            return Err(reject(
                "invalid_message_type",
                format!(
                    "message_type {t:?} must be one of {}",
                    MESSAGE_TYPES.join(", ")
                ),
            ))
        }
    };
    if let Some(url) = &req.callback_url {
        check_callback_url(url, limits)?;
    }
    if let Some(at) = req.send_at {
        let (min, max) = (limits.min_send_at_ahead_s, limits.max_send_at_ahead_s);
        if at < now_ms + min * 1000 || at > now_ms + max * 1000 {
            return Err(reject(
                "invalid_send_at",
                format!("send_at must be {min} s to {max} s from now"),
            ));
        }
    }
    // The validity period of a held message starts when it is released.
    let starts = req.send_at.unwrap_or(now_ms);
    let expires_at = match req.validity_period_s.or(limits.default_validity_s) {
        None => None,
        Some(v) if v >= 1 && v <= limits.max_validity_s => Some(starts + v as i64 * 1000),
        Some(v) => {
            return Err(reject(
                "invalid_validity_period",
                format!(
                    "validity_period_s is {v}; it must be 1 to {}",
                    limits.max_validity_s
                ),
            ))
        }
    };
    if let Some(at) = req.schedule_delivery_at {
        let latest = now_ms + limits.max_schedule_ahead_s * 1000;
        if at <= now_ms || at > latest {
            return Err(reject(
                "invalid_schedule",
                format!(
                    "schedule_delivery_at must be in the future and at most {} s ahead",
                    limits.max_schedule_ahead_s
                ),
            ));
        }
        if expires_at.is_some_and(|e| e <= at) {
            return Err(reject(
                "invalid_schedule",
                "the validity period ends before the scheduled delivery",
            ));
        }
    }
    Ok(MessageAccepted {
        client_id: req.client_id.clone(),
        idempotency_key: req.idempotency_key.clone(),
        client_ref: req.client_ref.clone(),
        destination,
        sender: req.from.clone(),
        body: req.body.clone(),
        encoding: a.encoding.as_str().to_string(),
        segments: a.segments as i32,
        registered_delivery: req.registered_delivery,
        expires_at,
        schedule_delivery_at: req.schedule_delivery_at,
        callback_url: req.callback_url.clone(),
        send_at: req.send_at,
        message_type,
    })
}

/// The message types a request may name.
pub const MESSAGE_TYPES: [&str; 3] = ["transactional", "promotional", "otp"];

/// A callback URL: absolute `https://` (or `http://` when the limits allow it), with a
/// host, at most 2,048 bytes.
pub fn check_callback_url(url: &str, limits: &Limits) -> Result<(), Rejection> {
    let bad = |why: &str| reject("invalid_callback_url", format!("callback_url {why}"));
    if url.len() > 2048 {
        return Err(bad("is longer than 2048 bytes"));
    }
    let parsed = reqwest::Url::parse(url).map_err(|e| bad(&format!("is not a URL: {e}")))?;
    match parsed.scheme() {
        "https" => {}
        "http" if limits.allow_http_callbacks => {}
        "http" => return Err(bad("must use https")),
        other => return Err(bad(&format!("has unsupported scheme {other}"))),
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(bad("has no host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(bad(
            "must not carry credentials; callbacks are signed instead",
        ));
    }
    Ok(())
}

/// The rejected event for a request.
pub fn rejected(req: &SubmitRequest, r: Rejection) -> MessageRejected {
    MessageRejected {
        client_id: smsgw_runtime::clip_str(&req.client_id, REJECTED_ID_MAX),
        idempotency_key: req
            .idempotency_key
            .as_deref()
            .map(|k| smsgw_runtime::clip_str(k, REJECTED_ID_MAX)),
        reason_code: r.code.to_string(),
        reason: r.reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(to: &str, from: &str, body: &str) -> SubmitRequest {
        SubmitRequest {
            client_id: "shop".into(),
            to: to.into(),
            from: from.into(),
            body: body.into(),
            idempotency_key: None,
            client_ref: None,
            message_id: None,
            registered_delivery: None,
            validity_period_s: None,
            schedule_delivery_at: None,
            callback_url: None,
            message_type: None,
            send_at: None,
        }
    }

    fn check(r: &SubmitRequest) -> Result<MessageAccepted, Rejection> {
        validate(r, &Limits::default(), None, 0)
    }

    #[test]
    fn validity_and_schedule_are_bounded_and_carried() {
        let now = 1_000_000;
        let limits = Limits::default();
        let mut r = req("+447911123456", "SHOP", "x");
        r.validity_period_s = Some(600);
        r.schedule_delivery_at = Some(now + 60_000);
        r.registered_delivery = Some(false);
        let a = validate(&r, &limits, None, now).unwrap();
        assert_eq!(a.expires_at, Some(now + 600_000));
        assert_eq!(a.schedule_delivery_at, Some(now + 60_000));
        assert_eq!(a.registered_delivery, Some(false));
        let code = |r: &SubmitRequest| validate(r, &limits, None, now).unwrap_err().code;
        for bad in [0, -5, limits.max_validity_s + 1] {
            r.validity_period_s = Some(bad);
            assert_eq!(code(&r), "invalid_validity_period", "{bad}");
        }
        r.validity_period_s = None;
        r.schedule_delivery_at = Some(now - 1);
        assert_eq!(code(&r), "invalid_schedule", "in the past");
        r.schedule_delivery_at = Some(now + limits.max_schedule_ahead_s * 1000 + 1);
        assert_eq!(code(&r), "invalid_schedule", "too far ahead");
        r.schedule_delivery_at = Some(now + 120_000);
        r.validity_period_s = Some(60);
        assert_eq!(code(&r), "invalid_schedule", "expires before it is due");
        // A default validity applies to requests that set none.
        let limits = Limits {
            default_validity_s: Some(300),
            ..Limits::default()
        };
        let plain = req("+447911123456", "SHOP", "x");
        let a = validate(&plain, &limits, None, now).unwrap();
        assert_eq!(a.expires_at, Some(now + 300_000));
    }

    #[test]
    fn accepts_a_valid_request_and_normalises_the_number() {
        let a = check(&req("+44 7911 123456", "SHOP", "hello")).unwrap();
        assert_eq!(a.destination, "+447911123456");
        assert_eq!((a.encoding.as_str(), a.segments), ("GSM7", 1));
    }

    #[test]
    fn national_numbers_need_a_default_country() {
        assert_eq!(
            check(&req("07911 123456", "SHOP", "x")).unwrap_err().code,
            "invalid_destination"
        );
        let gb = "GB".parse().ok();
        assert_eq!(
            validate(&req("07911 123456", "SHOP", "x"), &Limits::default(), gb, 0)
                .unwrap()
                .destination,
            "+447911123456"
        );
    }

    #[test]
    fn rejects_bad_numbers() {
        for to in ["", "hello", "+1", "+44 12"] {
            assert_eq!(
                check(&req(to, "SHOP", "x")).unwrap_err().code,
                "invalid_destination",
                "{to}"
            );
        }
    }

    #[test]
    fn rejects_bad_senders() {
        for from in ["", "TOOLONGSENDER", "a-b", "1234567890123456"] {
            assert_eq!(
                check(&req("+447911123456", from, "x")).unwrap_err().code,
                "invalid_sender",
                "{from}"
            );
        }
        assert!(check(&req("+447911123456", "+4479", "x")).is_ok());
    }

    #[test]
    fn rejects_empty_and_oversized_bodies() {
        assert_eq!(
            check(&req("+447911123456", "SHOP", "  ")).unwrap_err().code,
            "empty_body"
        );
        assert_eq!(
            check(&req("+447911123456", "SHOP", &"a".repeat(1601)))
                .unwrap_err()
                .code,
            "body_too_long"
        );
        // 700 emoji: 1400 UTF-16 units = 21 UCS-2 parts > 10.
        assert_eq!(
            check(&req("+447911123456", "SHOP", &"😀".repeat(700)))
                .unwrap_err()
                .code,
            "body_too_long"
        );
    }

    #[test]
    fn detects_ucs2_and_counts_segments() {
        let a = check(&req("+447911123456", "SHOP", &"é😀".repeat(40))).unwrap();
        assert_eq!((a.encoding.as_str(), a.segments), ("UCS2", 2));
    }

    #[test]
    fn send_at_must_fall_between_one_minute_and_35_days() {
        let now = 1_800_000_000_000;
        let l = Limits::default();
        for (ahead_s, ok) in [
            (59, false),
            (60, true),
            (35 * 86_400, true),
            (35 * 86_400 + 1, false),
        ] {
            let mut r = req("+447911123456", "SHOP", "hi");
            r.send_at = Some(now + ahead_s * 1000);
            let got = validate(&r, &l, None, now);
            assert_eq!(got.is_ok(), ok, "{ahead_s} s ahead: {got:?}");
            if let Err(e) = got {
                assert_eq!(e.code, "invalid_send_at");
            }
        }
    }

    #[test]
    fn validity_of_a_held_message_counts_from_its_send_time() {
        let now = 1_800_000_000_000;
        let mut r = req("+447911123456", "SHOP", "hi");
        r.send_at = Some(now + 3_600_000);
        r.validity_period_s = Some(600);
        let a = validate(&r, &Limits::default(), None, now).unwrap();
        assert_eq!(a.send_at, Some(now + 3_600_000));
        assert_eq!(a.expires_at, Some(now + 3_600_000 + 600_000));
    }

    #[test]
    fn callback_urls_must_be_https_with_a_host_and_no_credentials() {
        let mut l = Limits::default();
        for (url, ok) in [
            ("https://shop.example/hook?x=1", true),
            ("http://shop.example/hook", false),
            ("ftp://shop.example/", false),
            ("not a url", false),
            ("https://user:pw@shop.example/", false),
        ] {
            let mut r = req("+447911123456", "SHOP", "hi");
            r.callback_url = Some(url.into());
            let got = validate(&r, &l, None, 0);
            assert_eq!(got.is_ok(), ok, "{url}: {got:?}");
            if let Ok(a) = got {
                assert_eq!(a.callback_url.as_deref(), Some(url));
            } else {
                assert_eq!(got.unwrap_err().code, "invalid_callback_url");
            }
        }
        l.allow_http_callbacks = true;
        let mut r = req("+447911123456", "SHOP", "hi");
        r.callback_url = Some("http://127.0.0.1:9/cb".into());
        assert!(validate(&r, &l, None, 0).is_ok());
    }

    #[test]
    fn message_type_is_one_of_three() {
        for (t, ok) in [
            ("otp", true),
            ("promotional", true),
            ("transactional", true),
            ("marketing", false),
        ] {
            let mut r = req("+447911123456", "SHOP", "hi");
            r.message_type = Some(t.into());
            let got = validate(&r, &Limits::default(), None, 0);
            assert_eq!(got.is_ok(), ok, "{t}");
            if let Ok(a) = got {
                assert_eq!(a.message_type.as_deref(), Some(t));
            }
        }
    }

    // Outside input, arbitrary: 1,000 cases each (`cargo test -p smsgw-ingest
    // validate::tests::prop` prints nothing on success; a failure prints its minimal case).
    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1000))]

        /// Any request is accepted or rejected with a reason code; never a panic. A
        /// rejection and the event that records it stay bounded whatever the input size.
        #[test]
        fn prop_any_request_is_accepted_or_rejected_boundedly(
            to in ".{0,300}",
            from in ".{0,300}",
            body in ".{0,2000}",
            client in ".{0,600}",
            key in proptest::option::of(".{0,600}"),
            validity in proptest::option::of(proptest::prelude::any::<i32>()),
            schedule in proptest::option::of(proptest::prelude::any::<i64>()),
            send_at in proptest::option::of(proptest::prelude::any::<i64>()),
            callback in proptest::option::of(".{0,300}"),
            message_type in proptest::option::of(".{0,40}"),
            now in 0i64..4_000_000_000_000,
        ) {
            let mut r = req(&to, &from, &body);
            r.client_id = client;
            r.idempotency_key = key;
            r.validity_period_s = validity;
            r.schedule_delivery_at = schedule;
            r.send_at = send_at;
            r.callback_url = callback;
            r.message_type = message_type;
            match validate(&r, &Limits::default(), None, now) {
                Ok(a) => {
                    proptest::prop_assert!(a.destination.starts_with('+'));
                    proptest::prop_assert!(a.segments >= 1);
                    proptest::prop_assert_eq!(&a.body, &r.body);
                }
                Err(e) => {
                    proptest::prop_assert!(!e.code.is_empty());
                    let event = rejected(&r, e);
                    proptest::prop_assert!(event.reason.len() <= 1024, "reason of {} bytes", event.reason.len());
                    proptest::prop_assert!(event.client_id.len() <= REJECTED_ID_MAX);
                    proptest::prop_assert!(event.idempotency_key.map_or(0, |k| k.len()) <= REJECTED_ID_MAX);
                }
            }
        }

        /// Arbitrary bytes on the ingest topic, as JSON or Avro: decoded or refused.
        #[test]
        fn prop_any_ingest_record_decodes_or_is_refused(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
            json in proptest::prelude::any::<bool>(),
        ) {
            let ct = json.then_some("application/json");
            let _ = smsgw_codec::decode_submit_request(&bytes, ct);
        }
    }
}
