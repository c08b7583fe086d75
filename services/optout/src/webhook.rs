//! MO webhooks: MO messages that are not keywords are POSTed to the webhook of the
//! sender they were sent to, as JSON, signed when the sender has a secret. A failing
//! call is retried with exponential backoff and jitter; after the last attempt the MO
//! goes to the dead-letter topic with the reason. This runs in its own consumer group,
//! so a slow webhook holds up only the webhook deliveries of its partition, never
//! keyword handling.
//!
//! Signature: `X-Smsgw-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">` and
//! `X-Smsgw-Timestamp: <Unix seconds>`.

use crate::config::{Config, Retry};
use crate::metrics::Metrics;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use smsgw_kafka::{HandleError, Handler, Incoming, OutRecord};
use std::time::Duration;

/// The signature header value for `body` sent at `timestamp`.
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(secret).expect("any key length");
    m.update(timestamp.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    format!("sha256={}", hex::encode(m.finalize().into_bytes()))
}

/// The delay before retry `n` (1-based): doubling from the initial backoff, capped,
/// with ±50% jitter from `jitter` in [0, 1).
pub fn backoff(r: &Retry, n: u32, jitter: f64) -> Duration {
    let base = r
        .initial_backoff_ms
        .saturating_mul(1u64 << (n - 1).min(20))
        .min(r.max_backoff_ms);
    Duration::from_millis((base as f64 * (0.5 + jitter)) as u64)
}

/// Forwards MO to webhooks.
pub struct WebhookHandler {
    /// Settings.
    pub config: Config,
    /// HTTP client.
    pub client: reqwest::Client,
    /// Metrics.
    pub metrics: Metrics,
}

impl Handler for WebhookHandler {
    async fn handle(
        &mut self,
        input: &Incoming<'_>,
        _now_ms: i64,
    ) -> Result<Vec<OutRecord>, HandleError> {
        let m = crate::handler::decode_inbound(input)?;
        let profile = self
            .config
            .resolve(&m.to)
            .map_err(HandleError::DeadLetter)?;
        if profile.keywords.classify(&m.body).is_some() {
            return Err(HandleError::Drop("keyword"));
        }
        let Some(url) = profile.webhook_url else {
            return Err(HandleError::Drop("no webhook for this sender"));
        };
        let body = serde_json::to_vec(&serde_json::json!({
            "inbound_id": m.inbound_id, "carrier": m.carrier, "from": m.from,
            "to": m.to, "body": m.body, "received_at": m.received_at,
        }))
        .map_err(|e| HandleError::DeadLetter(e.to_string()))?;
        let retry = &self.config.webhook_retry;
        let mut last = String::new();
        for attempt in 1..=retry.max_attempts {
            if attempt > 1 {
                tokio::time::sleep(backoff(retry, attempt - 1, rand::random())).await;
            }
            let ts = smsgw_kafka::now_ms() / 1000;
            let mut rb = self
                .client
                .post(&url)
                .timeout(Duration::from_millis(retry.timeout_ms))
                .header("content-type", "application/json")
                .header("x-smsgw-inbound-id", &m.inbound_id)
                .body(body.clone());
            if let Some(secret) = &profile.webhook_secret {
                rb = rb
                    .header("x-smsgw-timestamp", ts.to_string())
                    .header("x-smsgw-signature", signature(secret.as_bytes(), ts, &body));
            }
            match rb.send().await {
                Ok(r) if r.status().is_success() => {
                    self.metrics
                        .webhooks
                        .with_label_values(&["delivered"])
                        .inc();
                    return Ok(vec![]);
                }
                Ok(r) => last = format!("HTTP {}", r.status()),
                Err(e) => last = e.to_string(),
            }
            self.metrics.webhooks.with_label_values(&["retried"]).inc();
            tracing::warn!(attempt, error = %last, "MO webhook failed");
        }
        self.metrics.webhooks.with_label_values(&["failed"]).inc();
        Err(HandleError::DeadLetter(format!(
            "MO webhook failed after {} attempts: {last}",
            retry.max_attempts
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_jitters() {
        let r = Retry {
            max_attempts: 5,
            initial_backoff_ms: 100,
            max_backoff_ms: 1000,
            timeout_ms: 1,
        };
        assert_eq!(backoff(&r, 1, 0.5), Duration::from_millis(100));
        assert_eq!(backoff(&r, 2, 0.5), Duration::from_millis(200));
        assert_eq!(backoff(&r, 5, 0.5), Duration::from_millis(1000));
        assert_eq!(backoff(&r, 40, 0.5), Duration::from_millis(1000));
        assert_eq!(backoff(&r, 1, 0.0), Duration::from_millis(50));
        assert!(backoff(&r, 1, 0.999) < Duration::from_millis(150));
    }

    #[test]
    fn signatures_cover_timestamp_and_body() {
        let a = signature(b"k", 10, b"{}");
        assert!(a.starts_with("sha256=") && a.len() == 7 + 64);
        assert_ne!(a, signature(b"k", 11, b"{}"));
        assert_ne!(a, signature(b"k", 10, b"{ }"));
        assert_ne!(a, signature(b"j", 10, b"{}"));
    }
}
