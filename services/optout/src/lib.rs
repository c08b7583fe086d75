//! smsgw optout: keeps the opt-out log, answers keywords, serves the opt-out API, and
//! forwards other MO messages to webhooks.
//!
//! Data flow:
//! - The keyword loop consumes the inbound (MO) topic. An MO whose whole text is a
//!   stop or start keyword (per sender, account or default lists) becomes an
//!   `OptOutChanged` on the opt-out log, keyed `<scope>|<number>`, with its audit
//!   (source `keyword`, actor `mo:<carrier>`, the inbound id). STOP, START and HELP get
//!   their configured reply, written to the ingest topic as an ordinary message from
//!   [`smsgw_codec::SYSTEM_CLIENT`], which the opt-out it confirms does not block.
//! - The webhook loop (its own consumer group) POSTs every other MO to its sender's
//!   webhook, retrying with backoff, dead-lettering after the last attempt.
//! - The API (`/v1/optouts`) adds, removes, checks, lists and imports opt-outs; it reads
//!   a copy of the opt-out log tailed into memory (rebuilt from the log on start).
//!
//! The router and the dispatcher tail the same log and block opted-out recipients.

pub mod api;
pub mod config;
pub mod handler;
pub mod keywords;
pub mod metrics;
pub mod webhook;

pub use config::{Config, Scope};

use smsgw_codec::OptOutChanged;
use smsgw_kafka::{consumer, run_consumer, KafkaError, Producer};
use smsgw_runtime::Shutdown;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thiserror::Error;

/// Why optout stopped.
#[derive(Debug, Error)]
pub enum OptOutError {
    /// Invalid configuration.
    #[error("config: {0}")]
    Config(String),
    /// Kafka failed beyond what the loop rides out.
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// The admin endpoint could not start.
    #[error(transparent)]
    Runtime(#[from] smsgw_runtime::RuntimeError),
    /// The API could not listen.
    #[error("api_listen: {0}")]
    Listen(std::io::Error),
}

/// The loop that runs `handler` over the inbound topic in consumer group `group` until
/// `shutdown` (spawned by the caller, where the handler's type is known).
fn inbound_loop<H: smsgw_kafka::Handler>(
    config: &Config,
    group: &str,
    producer: Producer,
    metrics: smsgw_kafka::ConsumerMetrics,
    shutdown: Shutdown,
    mut handler: H,
) -> Result<impl Future<Output = Result<(), KafkaError>>, KafkaError> {
    let consumer = consumer(&config.kafka, group)?;
    smsgw_kafka::join(&consumer, &config.kafka, &[&config.kafka.topics.inbound()])?;
    let dlq = config.kafka.topics.dead_letter();
    Ok(async move {
        run_consumer(
            consumer,
            &producer,
            &dlq,
            "optout",
            &mut handler,
            &metrics,
            1_000,
            shutdown.wait(),
        )
        .await
    })
}

/// Runs optout until `shutdown` resolves.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), OptOutError> {
    config.validate().map_err(OptOutError::Config)?;
    let shutdown = Shutdown::new(shutdown);
    let metrics = metrics::Metrics::new();
    let health = smsgw_runtime::Health::default();
    let _probe = smsgw_kafka::spawn_probe(&config.kafka, health.clone(), shutdown.clone().wait())?;
    let admin = smsgw_runtime::serve_admin(
        config.admin_listen,
        metrics.registry.clone(),
        health.clone(),
        shutdown.clone().wait(),
    )
    .await?;
    let producer = Producer::new(&config.kafka)?;
    let topics = config.kafka.topics.clone();

    // The API's copy of the opt-out log.
    let view = Arc::new(Mutex::new(api::View::default()));
    let (tail_state, tailer) = {
        let view = view.clone();
        smsgw_kafka::spawn_tail(
            &config.kafka,
            topics.optout(),
            Some(Duration::from_millis(config.refresh_ms)),
            shutdown.clone().wait(),
            move |c: OptOutChanged| view.lock().unwrap_or_else(|p| p.into_inner()).apply(c),
        )
    };
    tail_state.caught_up().await;
    let listener = tokio::net::TcpListener::bind(config.api_listen)
        .await
        .map_err(OptOutError::Listen)?;
    let keys = config.keys().map_err(OptOutError::Config)?;
    config.auth.check(&keys).map_err(OptOutError::Config)?;
    if keys.is_empty() {
        tracing::warn!("auth = \"disabled\": the opt-out API accepts unauthenticated calls");
    }
    let app = api::router(api::ApiState {
        producer: producer.clone(),
        topics: topics.clone(),
        view,
        metrics: metrics.clone(),
        keys,
    });
    let api_server = {
        let stop = shutdown.clone();
        tokio::spawn(async move {
            if let Err(e) = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .with_graceful_shutdown(stop.wait())
            .await
            {
                tracing::error!(error = %e, "opt-out API failed");
            }
        })
    };

    let keyword_loop = tokio::spawn(inbound_loop(
        &config,
        &config.group_id,
        producer.clone(),
        metrics.consumer.clone(),
        shutdown.clone(),
        handler::KeywordHandler {
            config: config.clone(),
            topics: topics.clone(),
            metrics: metrics.clone(),
        },
    )?);
    let webhook_loop = tokio::spawn(inbound_loop(
        &config,
        &config.webhook_group_id,
        producer.clone(),
        metrics.webhook_consumer.clone(),
        shutdown.clone(),
        webhook::WebhookHandler {
            config: config.clone(),
            client: reqwest::Client::new(),
            metrics: metrics.clone(),
        },
    )?);
    let (k, w, _, _, _) = tokio::join!(keyword_loop, webhook_loop, api_server, tailer, admin);
    for r in [k, w] {
        match r {
            Ok(Err(e)) => return Err(e.into()),
            Err(e) => tracing::error!(error = %e, "optout loop panicked"),
            Ok(Ok(())) => {}
        }
    }
    Ok(())
}
