//! smsgw dispatcher: the gateway's SMPP 3.4 client.
//!
//! Data flow, per configured carrier: session tasks bind as the carrier's `bind_mode` says
//! (transceivers, transmitters, receivers, or transmitter + receiver pairs; `binds` of
//! them), reconnecting with backoff and jitter, `enquire_link` keeping them alive, and
//! publish the carrier's status to the carrier-status topic. A dispatch loop consumes the
//! carrier's dispatch topic and submits each `DispatchRequested` as `submit_sm` on one of
//! the submitting binds (round-robin, at most `window` outstanding per bind), and writes `MessageSubmitted` or `SubmitFailed` to the event log; on
//! success it then writes a `SubmitCorrelated` record (carrier id -> message id) to the
//! receipts topic. `deliver_sm` receipts go to the receipts topic, MO messages to the
//! inbound topic, and each is acknowledged only after Kafka holds it. Offsets of the
//! dispatch topic are stored only once an outcome is recorded.
//!
//! A link that breaks (or a response that times out) after a `submit_sm` left makes the
//! outcome unknown: the attempt fails as *ambiguous* (counted by
//! `smsgw_dispatcher_ambiguous_submits_total` and visible on the event) and the router
//! may try another carrier.

pub mod config;
pub mod dispatch;
pub mod guard;
pub mod http;
pub mod limiter;
pub mod metrics;
pub mod mo;
pub mod optouts;
pub mod pdu;
pub mod pool;
pub mod recovery;
pub mod session;
pub mod tls;
pub mod webhook;

pub use config::{CarrierConfig, Config};

use smsgw_kafka::{KafkaError, Producer};
use smsgw_runtime::Shutdown;
use std::future::Future;
use thiserror::Error;
use tokio::sync::watch;

/// Why the dispatcher stopped.
#[derive(Debug, Error)]
pub enum DispatcherError {
    /// Invalid configuration.
    #[error("config: {0}")]
    Config(String),
    /// Kafka failed beyond what the loop rides out.
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// The admin endpoint could not start.
    #[error(transparent)]
    Runtime(#[from] smsgw_runtime::RuntimeError),
}

/// Runs the dispatcher until `shutdown` resolves: then it stops taking work, drains each
/// window, and unbinds.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), DispatcherError> {
    config.validate().map_err(DispatcherError::Config)?;
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
    // Copies of the opt-out log and of the cancellations, checked before each first part.
    let refresh = Some(std::time::Duration::from_millis(config.optout_refresh_ms));
    let optout_index =
        std::sync::Arc::new(std::sync::Mutex::new(smsgw_codec::OptOutIndex::default()));
    let (optout_state, optout_tail) = {
        let ix = optout_index.clone();
        smsgw_kafka::spawn_tail(
            &config.kafka,
            config.kafka.topics.optout(),
            refresh,
            shutdown.clone().wait(),
            move |c: smsgw_codec::OptOutChanged| {
                ix.lock().unwrap_or_else(|p| p.into_inner()).apply(&c)
            },
        )
    };
    let cancelled = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
    let (cancel_state, cancel_tail) = {
        let c = cancelled.clone();
        smsgw_kafka::spawn_tail(
            &config.kafka,
            config.kafka.topics.cancellations(),
            refresh,
            shutdown.clone().wait(),
            move |r: smsgw_codec::CancelRequested| {
                c.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(r.message_id, r.actor);
            },
        )
    };
    optout_state.caught_up().await;
    cancel_state.caught_up().await;
    let gate = optouts::OptOutGate::new(
        optout_index,
        optout_state,
        cancelled,
        cancel_state,
        config.optout_max_staleness_ms as i64,
    );
    let hooks = match config.webhook_listen {
        Some(addr) if webhook::wanted(&config.carriers) => {
            let app = webhook::router(
                &config.carriers,
                producer.clone(),
                config.kafka.topics.clone(),
                metrics.clone(),
            )
            .map_err(DispatcherError::Config)?;
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| DispatcherError::Config(format!("webhook_listen {addr}: {e}")))?;
            let stop = shutdown.clone();
            Some(tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app)
                    .with_graceful_shutdown(stop.wait())
                    .await
                {
                    tracing::error!(error = %e, "webhook server failed");
                }
            }))
        }
        _ => None,
    };
    let mut tasks = Vec::new();
    for carrier in &config.carriers {
        // With several dispatchers each holds its share of the carrier's binds and rate.
        let carrier = &carrier.share(config.kafka.instance, config.kafka.instances);
        if config.kafka.instances > 1 {
            tracing::info!(carrier = %carrier.name, binds = carrier.binds, max_rate = ?carrier.max_rate, "this instance's share of the carrier");
        }
        let pool = pool::BindPool::new(
            carrier.window,
            metrics.window_in_use.with_label_values(&[&carrier.name]),
        );
        let (stop_session, session_stop) = watch::channel(false);
        let session_ctx = session::SessionCtx {
            carrier: carrier.clone(),
            producer: producer.clone(),
            topics: config.kafka.topics.clone(),
            metrics: metrics.clone(),
            health: health.clone(),
            mo: std::sync::Arc::new(std::sync::Mutex::new(mo::Reassembler::new(
                carrier.mo_reassembly_timeout_ms,
            ))),
            instance: config.kafka.instance,
        };
        if !carrier.is_http() {
            health.set(
                &format!("carrier:{}", carrier.name),
                false,
                false,
                "not bound yet",
            );
        }
        let sessions: Vec<_> = carrier
            .smpp_sessions()
            .into_iter()
            .map(|(slot, role)| {
                tokio::spawn(session::run_session(
                    session_ctx.clone(),
                    slot,
                    role,
                    pool.clone(),
                    session_stop.clone(),
                ))
            })
            .collect();
        let ctx = dispatch::DispatchCtx {
            carrier: carrier.clone(),
            producer: producer.clone(),
            topics: config.kafka.topics.clone(),
            metrics: metrics.clone(),
            limiter: std::sync::Arc::new(limiter::RateLimiter::new(
                carrier.max_rate,
                std::time::Duration::from_millis(carrier.throttle_interval_ms),
            )),
            optouts: gate.clone(),
            shutdown: shutdown.clone(),
        };
        let link = match &carrier.http {
            Some(h) if carrier.is_http() => dispatch::Link::Http(std::sync::Arc::new(
                http::HttpConnector::new(&carrier.url, h).map_err(DispatcherError::Config)?,
            )),
            _ => dispatch::Link::Smpp(pool),
        };
        let (kafka, stop) = (config.kafka.clone(), shutdown.clone());
        let lookback = config.restart_lookback_ms;
        let drain = std::time::Duration::from_millis(config.drain_timeout_ms);
        tasks.push(tokio::spawn(async move {
            let r = if ctx.carrier.submits() {
                dispatch::run_dispatch(ctx, &kafka, link, lookback, drain).await
            } else {
                // Receive-only: nothing to submit, so its dispatch topic is not consumed.
                stop.wait().await;
                Ok(())
            };
            // The window is drained: now unbind.
            let _ = stop_session.send(true);
            for s in sessions {
                let _ = s.await;
            }
            r
        }));
    }
    let mut result = Ok(());
    for t in tasks {
        match t.await {
            Ok(Err(e)) => result = Err(e.into()),
            Err(e) => tracing::error!(error = %e, "dispatch task panicked"),
            Ok(Ok(())) => {}
        }
    }
    if let Some(h) = hooks {
        let _ = h.await;
    }
    let _ = optout_tail.await;
    let _ = cancel_tail.await;
    let _ = admin.await;
    result
}
