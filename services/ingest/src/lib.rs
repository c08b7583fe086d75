//! smsgw ingest: the front door.
//!
//! Data flow: upstream producers write `SubmitRequest`s (Avro or JSON, by the
//! `content-type` header) to the ingest topic; the HTTP API's `POST /v1/messages` writes
//! there too. [`handler::IngestHandler`] reads each record, assigns the message id
//! (deterministic, so retries and replays give the same id), drops ids the event log
//! already has, validates (E.164 via `phonenumber`, sender id, body, size, GSM-7/UCS-2
//! segments) and writes `MessageAccepted` or `MessageRejected` to the event log.
//! Undecodable records go to the dead-letter topic.
//!
//! A second consumer tails the event log into a [`view::View`] that serves
//! `GET /v1/messages/{id}` and feeds the idempotency index; ingest takes no request
//! before that view has caught up with the log.

pub mod config;
pub mod handler;
pub mod http;
pub mod metrics;
pub use smsgw_admission as validate;
pub use smsgw_admission::quota;
pub mod view;

pub use config::Config;

use smsgw_kafka::{consumer, run_consumer, KafkaError, Producer};
use smsgw_runtime::Shutdown;
use std::future::Future;
use std::sync::Arc;
use thiserror::Error;

/// Why ingest stopped.
#[derive(Debug, Error)]
pub enum IngestError {
    /// Invalid configuration: fix it and restart.
    #[error("config: {0}")]
    Config(String),
    /// Kafka failed in a way the loop cannot ride out: the process exits and the restart
    /// re-reads from the last committed offset.
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// The HTTP listener could not bind.
    #[error("http listener: {0}")]
    Http(#[from] std::io::Error),
}

/// Runs ingest until `shutdown` resolves.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), IngestError> {
    config.validate().map_err(IngestError::Config)?;
    let shutdown = Shutdown::new(shutdown);
    let metrics = metrics::Metrics::new();
    let producer = Producer::new(&config.kafka)?;
    let shared = Arc::new(view::Shared::new(
        config.view_capacity,
        config.dedupe_capacity,
    ));
    let default_country = config
        .default_country
        .as_deref()
        .and_then(|c| c.parse().ok());

    let view_task = {
        let (kafka, shared, metrics, stop) = (
            config.kafka.clone(),
            shared.clone(),
            metrics.clone(),
            shutdown.clone(),
        );
        tokio::spawn(async move {
            if let Err(e) = view::run_view(&kafka, &shared, &metrics, stop).await {
                tracing::error!(error = %e, "status view stopped");
            }
        })
    };

    let health = smsgw_runtime::Health::default();
    let _probe = smsgw_kafka::spawn_probe(&config.kafka, health.clone(), shutdown.clone().wait())?;
    let keys = config.keys().map_err(IngestError::Config)?;
    config.auth.check(&keys).map_err(IngestError::Config)?;
    if keys.is_empty() {
        tracing::warn!("auth = \"disabled\": the HTTP API accepts unauthenticated calls");
    }
    let api = http::router(http::ApiState {
        producer: producer.clone(),
        topics: config.kafka.topics.clone(),
        shared: shared.clone(),
        limits: config.limits.clone(),
        default_country,
        metrics: metrics.clone(),
        keys,
        quotas: Arc::new(std::sync::Mutex::new(quota::Quotas::new(
            config.daily_quotas.clone(),
            config.kafka.instances,
        ))),
    });
    // The API's port first: a service whose API cannot listen never reports healthy.
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    // Probes and metrics on their own port, unless configured on the API's.
    let (api, _admin) = if config.admin_listen == config.listen {
        let admin = smsgw_runtime::admin_router(metrics.registry.clone(), health.clone());
        (api.merge(admin), None)
    } else {
        let admin = smsgw_runtime::serve_admin(
            config.admin_listen,
            metrics.registry.clone(),
            health.clone(),
            shutdown.clone().wait(),
        )
        .await
        .map_err(|e| IngestError::Config(e.to_string()))?;
        (api, Some(admin))
    };
    tracing::info!(addr = %config.listen, "HTTP API listening");
    let http_task = {
        let stop = shutdown.clone();
        tokio::spawn(async move {
            if let Err(e) = axum::serve(
                listener,
                api.into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .with_graceful_shutdown(stop.wait())
            .await
            {
                tracing::error!(error = %e, "HTTP API stopped");
            }
        })
    };

    tokio::select! {
        _ = shared.tail.caught_up() => {}
        _ = shutdown.clone().wait() => {}
    }
    let result = if shutdown.requested() {
        Ok(())
    } else {
        let consumer = consumer(&config.kafka, &config.group_id)?;
        let (ingest, replies) = (config.kafka.topics.ingest(), config.kafka.topics.replies());
        smsgw_kafka::join(&consumer, &config.kafka, &[&ingest, &replies])?;
        let mut handler = handler::IngestHandler {
            topics: config.kafka.topics.clone(),
            limits: config.limits.clone(),
            default_country,
            shared: shared.clone(),
            metrics: metrics.clone(),
        };
        tracing::info!("ingest consuming");
        run_consumer(
            consumer,
            &producer,
            &config.kafka.topics.dead_letter(),
            "ingest",
            &mut handler,
            &metrics.consumer,
            config.max_in_flight,
            shutdown.clone().wait(),
        )
        .await
        .map_err(IngestError::from)
    };
    let _ = tokio::join!(view_task, http_task);
    result
}
