//! The generic HTTP carrier connector: one request per message, built from a template,
//! with the carrier's message id taken from the response by a JSON pointer or a regex.
//! Receipts and MO come back through the webhook endpoints (see [`crate::webhook`]).

use crate::pdu::Attempt;
use serde::Deserialize;
use smsgw_codec::DispatchRequested;
use std::collections::BTreeMap;
use std::time::Duration;

/// How to submit to an HTTP carrier, and how it calls us back.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Request method.
    #[serde(default = "post")]
    pub method: String,
    /// Request body template. `{{placeholder}}`s are replaced by the message's values,
    /// escaped for `content_type`: `message_id`, `attempt`, `to` (E.164 with `+`),
    /// `to_digits`, `from`, `body`, `encoding`, `segments`, `carrier`.
    pub body: String,
    /// `application/json` (placeholders are JSON-string escaped) or
    /// `application/x-www-form-urlencoded` (placeholders are URL-encoded).
    #[serde(default = "json_type")]
    pub content_type: String,
    /// Extra request headers. A value `env:NAME` is read from the environment at start.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Authentication.
    #[serde(default)]
    pub auth: HttpAuth,
    /// Where the carrier's message id is in a JSON response, as a JSON pointer
    /// (`/messages/0/id`). Numbers are taken as their decimal text.
    #[serde(default)]
    pub id_pointer: Option<String>,
    /// Or: a regex over the response body whose first group is the id.
    #[serde(default)]
    pub id_regex: Option<String>,
    /// Request timeout (ms). A timeout leaves the outcome unknown: the attempt fails as
    /// ambiguous and is not resent.
    #[serde(default = "http_timeout")]
    pub timeout_ms: u64,
    /// Receipt and MO webhooks of this carrier.
    #[serde(default)]
    pub webhook: Option<WebhookConfig>,
}

/// Credentials sent with each request. Secret values may be `env:NAME`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum HttpAuth {
    /// None.
    #[default]
    None,
    /// HTTP basic authentication.
    Basic {
        /// User name.
        username: String,
        /// Password (or `env:NAME`).
        password: String,
    },
    /// `Authorization: Bearer <token>`.
    Bearer {
        /// The token (or `env:NAME`).
        token: String,
    },
    /// An API key in a header of its own.
    Header {
        /// Header name.
        name: String,
        /// Header value (or `env:NAME`).
        value: String,
    },
}

/// The carrier's calls to us: delivery receipts and MO messages, as JSON, signed with
/// HMAC-SHA256.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The shared HMAC-SHA256 secret (or `env:NAME`).
    pub secret: String,
    /// Header carrying the hex signature, optionally prefixed `sha256=`.
    #[serde(default = "signature_header")]
    pub signature_header: String,
    /// Header carrying a Unix-seconds timestamp, required: the signed text is
    /// `<timestamp>.<body>`, calls more than `tolerance_s` off are refused, and a call
    /// whose signature was already accepted within that window is refused as a replay.
    #[serde(default = "timestamp_header")]
    pub timestamp_header: String,
    /// Accept calls signed over the body alone, without a timestamp and so without
    /// replay protection: only for a carrier that cannot send one.
    #[serde(default)]
    pub allow_unstamped: bool,
    /// Largest accepted clock difference (s).
    #[serde(default = "tolerance")]
    pub tolerance_s: i64,
    /// JSON pointer to the carrier's message id in a receipt.
    #[serde(default = "id_ptr")]
    pub receipt_id_pointer: String,
    /// JSON pointer to the carrier's status in a receipt.
    #[serde(default = "status_ptr")]
    pub receipt_status_pointer: String,
    /// JSON pointer to an error code in a receipt.
    #[serde(default)]
    pub receipt_error_pointer: Option<String>,
    /// Carrier status -> receipt `stat` (`DELIVRD`, `UNDELIV`, `EXPIRED`, `REJECTD`,
    /// `ACCEPTD`, ...), matched without regard to case. Unmapped statuses are taken
    /// upper-cased.
    #[serde(default)]
    pub statuses: BTreeMap<String, String>,
    /// JSON pointers of an MO message: sender, our number, text.
    #[serde(default = "mo_from")]
    pub mo_from_pointer: String,
    /// See `mo_from_pointer`.
    #[serde(default = "mo_to")]
    pub mo_to_pointer: String,
    /// See `mo_from_pointer`.
    #[serde(default = "mo_text")]
    pub mo_body_pointer: String,
}

fn post() -> String {
    "POST".into()
}
fn json_type() -> String {
    "application/json".into()
}
fn http_timeout() -> u64 {
    10_000
}
fn signature_header() -> String {
    "X-Signature".into()
}
fn timestamp_header() -> String {
    "X-Timestamp".into()
}
fn tolerance() -> i64 {
    300
}
fn id_ptr() -> String {
    "/id".into()
}
fn status_ptr() -> String {
    "/status".into()
}
fn mo_from() -> String {
    "/from".into()
}
fn mo_to() -> String {
    "/to".into()
}
fn mo_text() -> String {
    "/text".into()
}

pub use smsgw_runtime::secret;

/// The placeholders a template may use.
pub const PLACEHOLDERS: [&str; 9] = [
    "message_id",
    "attempt",
    "to",
    "to_digits",
    "from",
    "body",
    "encoding",
    "segments",
    "carrier",
];

/// How placeholder values are escaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// Inside a JSON string.
    Json,
    /// URL (form or query) encoding.
    Url,
}

/// Replaces `{{name}}` in `template` with `value(name)`, escaped. Unknown names fail.
pub fn render(
    template: &str,
    escape: Escape,
    value: impl Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| "unclosed {{ in template".to_string())?;
        let name = after[..end].trim();
        let v = value(name).ok_or_else(|| format!("unknown placeholder {{{{{name}}}}}"))?;
        match escape {
            Escape::Json => {
                let quoted = serde_json::to_string(&v).map_err(|e| e.to_string())?;
                out.push_str(&quoted[1..quoted.len() - 1]);
            }
            Escape::Url => out.push_str(&url_encode(&v)),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

fn url_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The value of a placeholder for a request.
pub fn placeholder(req: &DispatchRequested, name: &str) -> Option<String> {
    Some(match name {
        "message_id" => req.message_id.clone(),
        "attempt" => req.attempt.to_string(),
        "to" => req.destination.clone(),
        "to_digits" => req.destination.trim_start_matches('+').to_string(),
        "from" => req.sender.clone(),
        "body" => req.body.clone(),
        "encoding" => req.encoding.clone(),
        "segments" => req.segments.to_string(),
        "carrier" => req.carrier.clone(),
        _ => return None,
    })
}

/// A JSON value at `pointer` as text (strings as they are, numbers in decimal).
pub fn text_at(v: &serde_json::Value, pointer: &str) -> Option<String> {
    match v.pointer(pointer)? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A ready HTTP connector for one carrier.
#[derive(Debug, Clone)]
pub struct HttpConnector {
    client: reqwest::Client,
    url: String,
    method: reqwest::Method,
    body: String,
    escape: Escape,
    content_type: String,
    headers: Vec<(String, String)>,
    auth: HttpAuth,
    id_pointer: Option<String>,
    id_regex: Option<regex::Regex>,
}

impl HttpConnector {
    /// Checks the settings and resolves secrets; fails with a message naming the problem.
    pub fn new(url: &str, c: &HttpConfig) -> Result<Self, String> {
        let method = reqwest::Method::from_bytes(c.method.to_ascii_uppercase().as_bytes())
            .map_err(|_| format!("method {:?} is not an HTTP method", c.method))?;
        let escape = match c.content_type.split(';').next().unwrap_or("").trim() {
            "application/json" => Escape::Json,
            "application/x-www-form-urlencoded" => Escape::Url,
            other => {
                return Err(format!(
                "content_type {other:?}: use application/json or application/x-www-form-urlencoded"
            ))
            }
        };
        let known = |n: &str| PLACEHOLDERS.contains(&n).then(String::new);
        render(&c.body, escape, known).map_err(|e| format!("body: {e}"))?;
        render(url, Escape::Url, known).map_err(|e| format!("url: {e}"))?;
        let id_regex = match &c.id_regex {
            Some(r) => {
                let re = regex::Regex::new(r).map_err(|e| format!("id_regex: {e}"))?;
                if re.captures_len() < 2 {
                    return Err("id_regex needs a capture group for the id".into());
                }
                Some(re)
            }
            None => None,
        };
        if c.id_pointer.is_none() && id_regex.is_none() {
            return Err("set id_pointer or id_regex: receipts are matched by the id".into());
        }
        if let Some(p) = &c.id_pointer {
            if !p.is_empty() && !p.starts_with('/') {
                return Err(format!("id_pointer {p:?} must start with /"));
            }
        }
        let headers = c
            .headers
            .iter()
            .map(|(k, v)| Ok((k.clone(), secret(v)?)))
            .collect::<Result<Vec<_>, String>>()?;
        let auth = match &c.auth {
            HttpAuth::None => HttpAuth::None,
            HttpAuth::Basic { username, password } => HttpAuth::Basic {
                username: username.clone(),
                password: secret(password)?,
            },
            HttpAuth::Bearer { token } => HttpAuth::Bearer {
                token: secret(token)?,
            },
            HttpAuth::Header { name, value } => HttpAuth::Header {
                name: name.clone(),
                value: secret(value)?,
            },
        };
        if let Some(w) = &c.webhook {
            if secret(&w.secret)?.trim().is_empty() {
                return Err("webhook secret is empty: every call would verify".into());
            }
            if w.tolerance_s <= 0 {
                return Err("webhook tolerance_s must be positive".into());
            }
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(c.timeout_ms))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(HttpConnector {
            client,
            url: url.to_string(),
            method,
            body: c.body.clone(),
            escape,
            content_type: c.content_type.clone(),
            headers,
            auth,
            id_pointer: c.id_pointer.clone(),
            id_regex,
        })
    }

    /// Sends one message.
    pub async fn submit(&self, req: &DispatchRequested) -> Attempt {
        let value = |n: &str| placeholder(req, n);
        let (url, body) = match (
            render(&self.url, Escape::Url, value),
            render(&self.body, self.escape, value),
        ) {
            (Ok(u), Ok(b)) => (u, b),
            (Err(e), _) | (_, Err(e)) => return Attempt::NotSent(format!("template: {e}")),
        };
        let mut rb = self
            .client
            .request(self.method.clone(), &url)
            .header("content-type", &self.content_type)
            .body(body);
        for (k, v) in &self.headers {
            rb = rb.header(k, v);
        }
        rb = match &self.auth {
            HttpAuth::None => rb,
            HttpAuth::Basic { username, password } => rb.basic_auth(username, Some(password)),
            HttpAuth::Bearer { token } => rb.bearer_auth(token),
            HttpAuth::Header { name, value } => rb.header(name, value),
        };
        let resp = match rb.send().await {
            Ok(r) => r,
            Err(e) if e.is_connect() || e.is_builder() => {
                return Attempt::NotSent(format!("not sent: {e}"))
            }
            Err(e) => return Attempt::Unknown(format!("outcome unknown: {e}")),
        };
        let status = resp.status();
        let text = match resp.text().await {
            Ok(t) => t,
            Err(e) if status.is_success() => {
                return Attempt::Unknown(format!("accepted, but the body was lost: {e}"))
            }
            Err(_) => String::new(),
        };
        if !status.is_success() {
            let snippet: String = text.chars().take(200).collect();
            return Attempt::Refused(status.as_u16() as u32, format!("HTTP {status}: {snippet}"));
        }
        match self.extract_id(&text) {
            Some(id) => Attempt::Accepted(smsgw_smpp::normalize_message_id(&id)),
            None => Attempt::Unknown(format!(
                "HTTP {status} but no message id in the response: {}",
                text.chars().take(200).collect::<String>()
            )),
        }
    }

    fn extract_id(&self, body: &str) -> Option<String> {
        if let Some(p) = &self.id_pointer {
            let v: serde_json::Value = serde_json::from_str(body).ok()?;
            return text_at(&v, p).filter(|s| !s.is_empty());
        }
        let re = self.id_regex.as_ref()?;
        Some(re.captures(body)?.get(1)?.as_str().to_string()).filter(|s| !s.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(body: &str) -> DispatchRequested {
        DispatchRequested {
            message_id: "m-1".into(),
            carrier: "web".into(),
            attempt: 2,
            carriers_tried: vec!["web".into()],
            destination: "+447911100001".into(),
            sender: "SHOP".into(),
            body: body.into(),
            encoding: "GSM7".into(),
            segments: 1,
            accepted_at: 0,
            registered_delivery: None,
            expires_at: None,
            schedule_delivery_at: None,
            client_id: None,
        }
    }

    #[test]
    fn templates_escape_for_their_content_type() {
        let r = req("say \"hi\" & 😀\n");
        let json = render(
            r#"{"to":"{{to}}","text":"{{body}}","n":{{ attempt }}}"#,
            Escape::Json,
            |n| placeholder(&r, n),
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["text"], "say \"hi\" & 😀\n");
        assert_eq!(v["to"], "+447911100001");
        assert_eq!(v["n"], 2);
        let form = render("to={{to_digits}}&text={{body}}", Escape::Url, |n| {
            placeholder(&r, n)
        })
        .unwrap();
        assert_eq!(
            form,
            "to=447911100001&text=say%20%22hi%22%20%26%20%F0%9F%98%80%0A"
        );
        assert!(render("{{nope}}", Escape::Json, |n| placeholder(&r, n)).is_err());
        assert!(render("{{body", Escape::Json, |n| placeholder(&r, n)).is_err());
    }

    fn config(extra: &str) -> HttpConfig {
        serde_json::from_str(&format!(r#"{{"body":"{{{{body}}}}"{extra}}}"#)).unwrap()
    }

    #[test]
    fn bad_settings_fail_at_start() {
        let url = "http://h/send";
        assert!(HttpConnector::new(url, &config("")).is_err(), "no id rule");
        assert!(HttpConnector::new(url, &config(r#","id_pointer":"/id""#)).is_ok());
        assert!(HttpConnector::new(url, &config(r#","id_regex":"id=\\w+""#)).is_err());
        assert!(HttpConnector::new(url, &config(r#","id_regex":"id=(\\w+)""#)).is_ok());
        let bad = config(r#","id_pointer":"/id","content_type":"text/xml""#);
        assert!(HttpConnector::new(url, &bad).is_err());
        let bad = config(r#","id_pointer":"/id","method":"SE ND""#);
        assert!(HttpConnector::new(url, &bad).is_err());
        let bad = config(
            r#","id_pointer":"/id","auth":{"kind":"bearer","token":"env:SMSGW_TEST_UNSET_TOKEN"}"#,
        );
        let err = HttpConnector::new(url, &bad).unwrap_err();
        assert!(err.contains("SMSGW_TEST_UNSET_TOKEN"), "{err}");
        assert!(
            HttpConnector::new("http://h/{{nope}}", &config(r#","id_pointer":"/id""#)).is_err()
        );
        assert!(serde_json::from_str::<HttpConfig>(
            r#"{"body":"x","id_pointer":"/id","retries":3}"#
        )
        .is_err());
        // An empty webhook secret would let anyone sign: refused at start.
        let empty = config(r#","id_pointer":"/id","webhook":{"secret":" "}"#);
        let err = HttpConnector::new(url, &empty).unwrap_err();
        assert!(err.contains("secret is empty"), "{err}");
        let ok = config(r#","id_pointer":"/id","webhook":{"secret":"s3cret"}"#);
        assert!(HttpConnector::new(url, &ok).is_ok());
    }

    #[test]
    fn ids_come_from_a_pointer_or_a_regex() {
        let c =
            HttpConnector::new("http://h", &config(r#","id_pointer":"/messages/0/id""#)).unwrap();
        assert_eq!(
            c.extract_id(r#"{"messages":[{"id":12345}]}"#),
            Some("12345".into())
        );
        assert_eq!(c.extract_id(r#"{"messages":[]}"#), None);
        assert_eq!(c.extract_id("not json"), None);
        let c =
            HttpConnector::new("http://h", &config(r#","id_regex":"OK: ([0-9a-f]+)""#)).unwrap();
        assert_eq!(c.extract_id("OK: 00ab12\n"), Some("00ab12".into()));
        assert_eq!(c.extract_id("ERR"), None);
    }
}
