//! MO webhooks: MO messages that are not keywords are POSTed to the webhook of the
//! sender they were sent to, as JSON, signed when the sender has a secret. A failing
//! call is retried with exponential backoff and jitter; after the last attempt the MO
//! goes to the dead-letter topic with the reason. This runs in its own consumer group,
//! so a slow webhook holds up only the webhook deliveries of its partition, never
//! keyword handling.
//!
//! Signature: `X-Smsgw-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">` and
//! `X-Smsgw-Timestamp: <Unix seconds>`.

use crate::config::Config;
use crate::metrics::Metrics;
use smsgw_kafka::{HandleError, Handler, Incoming, OutRecord};
use smsgw_runtime::webhook::{post_with_retries, Call};

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
        let call = Call {
            url: &url,
            body: &body,
            headers: vec![("x-smsgw-inbound-id", m.inbound_id.clone())],
            secret: profile.webhook_secret.as_deref(),
        };
        let metrics = &self.metrics;
        let result = post_with_retries(
            &self.client,
            &call,
            &self.config.webhook_retry,
            |attempt, err| {
                metrics.webhooks.with_label_values(&["retried"]).inc();
                tracing::warn!(attempt, error = %err, "MO webhook failed");
            },
        )
        .await;
        match result {
            Ok(_) => {
                self.metrics
                    .webhooks
                    .with_label_values(&["delivered"])
                    .inc();
                Ok(vec![])
            }
            Err(e) => {
                self.metrics.webhooks.with_label_values(&["failed"]).inc();
                Err(HandleError::DeadLetter(format!("MO {e}")))
            }
        }
    }
}
