//! smsgw router: chooses the carrier for every message.
//!
//! Data flow: the router consumes the message event log. For `MessageAccepted` it waits
//! until its copy of the opt-out log is fresh as of the acceptance time, then either
//! emits `MessageBlocked` (the recipient opted out, globally or for this sender) or
//! picks the first carrier for the destination prefix that is not reported down, and
//! writes `CarrierSelected` to the event log and `DispatchRequested` to that carrier's
//! dispatch topic. For `SubmitFailed` it picks the next untried carrier, or emits
//! `MessageUndeliverable` when none is left. The opt-out log and the carrier-status topic
//! are tailed into memory ([`state::RouterState`]); on startup the last
//! `warmup_lookback_ms` of the event log is re-read so that in-flight messages can still
//! be re-routed after a restart. Messages accepted with a future `send_at` are held on
//! the schedule topic and released when due ([`schedule`]).

pub mod config;
pub mod handler;
pub mod metrics;
pub mod quiet;
pub mod schedule;
pub mod scoring;
pub mod state;
pub mod store;
pub mod table;
pub mod timeouts;
mod warmup;

pub use config::{Config, Route};

use smsgw_codec::{CarrierStatusChanged, OptOutChanged};
use smsgw_kafka::{consumer, run_consumer, spawn_tail, KafkaError, Producer};
use smsgw_runtime::Shutdown;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thiserror::Error;

/// Why the router stopped.
#[derive(Debug, Error)]
pub enum RouterError {
    /// Invalid configuration.
    #[error("config: {0}")]
    Config(String),
    /// Kafka failed beyond what the loop rides out; the restart resumes from the commit.
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// The admin endpoint could not start.
    #[error(transparent)]
    Runtime(#[from] smsgw_runtime::RuntimeError),
}

/// Runs the router until `shutdown` resolves.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RouterError> {
    config.validate().map_err(RouterError::Config)?;
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
    let state = Arc::new(Mutex::new(state::RouterState::new(
        config.pending_capacity,
        table::RouteTable::new(config.routes.clone()),
        config.scoring.clone(),
    )));
    let (optout_tail, optouts) = {
        let st = state.clone();
        spawn_tail(
            &config.kafka,
            config.kafka.topics.optout(),
            Some(Duration::from_millis(config.optout_refresh_ms)),
            shutdown.clone().wait(),
            move |o: OptOutChanged| st.lock().unwrap_or_else(|p| p.into_inner()).set_optout(&o),
        )
    };
    let (status_tail, statuses) = {
        let st = state.clone();
        spawn_tail(
            &config.kafka,
            config.kafka.topics.carrier_status(),
            None,
            shutdown.clone().wait(),
            move |s: CarrierStatusChanged| {
                st.lock().unwrap_or_else(|p| p.into_inner()).set_carrier_up(
                    &s.carrier,
                    s.instance.as_deref(),
                    s.up,
                )
            },
        )
    };
    let (_, cancellations) = {
        let st = state.clone();
        spawn_tail(
            &config.kafka,
            config.kafka.topics.cancellations(),
            Some(Duration::from_millis(config.optout_refresh_ms)),
            shutdown.clone().wait(),
            move |r: smsgw_codec::CancelRequested| {
                st.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .set_cancelled(r)
            },
        )
    };

    // Held messages first, so the warm-up can tell which of them were already routed.
    let held = Arc::new(Mutex::new(schedule::Schedule::default()));
    let (schedule_tail, schedule_task) =
        schedule::spawn_schedule_tail(&config.kafka, held.clone(), shutdown.clone());
    tokio::select! {
        _ = schedule_tail.caught_up() => {}
        _ = shutdown.clone().wait() => {}
    }
    {
        let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
        for e in held.lock().unwrap_or_else(|p| p.into_inner()).held() {
            if let smsgw_domain::EventPayload::Accepted(a) = &e.payload {
                st.remember(&e.message_id, a.clone(), e.occurred_at_ms);
            }
        }
    }
    smsgw_kafka::retry_startup("router warm-up", || {
        warmup::warm_up(&config.kafka, config.warmup_lookback_ms, &state)
    })
    .await?;
    // Know which carriers are down before the first decision.
    tokio::select! {
        _ = status_tail.caught_up() => {}
        _ = shutdown.clone().wait() => {}
    }

    let consumer = consumer(&config.kafka, &config.group_id)?;
    smsgw_kafka::join(&consumer, &config.kafka, &[&config.kafka.topics.events()])?;
    let mut handler = handler::RouterHandler {
        topics: config.kafka.topics.clone(),
        state,
        optout: optout_tail,
        metrics: metrics.clone(),
        lookup: Some(handler::ContextLookup {
            kafka: config.kafka.clone(),
            max_records: config.context_lookup_max_records,
        }),
    };
    let scheduler = tokio::spawn(schedule::run(
        handler.clone(),
        producer.clone(),
        held,
        smsgw_kafka::owned(&consumer),
        shutdown.clone(),
    ));
    let store = tokio::spawn(store::run(
        config.scoring.store.clone(),
        handler.state.clone(),
        metrics.clone(),
        shutdown.clone(),
    ));
    let timers = tokio::spawn(timeouts::run(
        handler.state.clone(),
        config.kafka.topics.clone(),
        producer.clone(),
        smsgw_kafka::owned(&consumer),
        shutdown.clone(),
    ));
    tracing::info!("router consuming");
    let result = run_consumer(
        consumer,
        &producer,
        &config.kafka.topics.dead_letter(),
        "router",
        &mut handler,
        &metrics.consumer,
        config.max_in_flight,
        shutdown.clone().wait(),
    )
    .await;
    smsgw_runtime::join_within(
        vec![
            ("opt-out tail", optouts),
            ("carrier-status tail", statuses),
            ("cancellation tail", cancellations),
            ("schedule tail", schedule_task),
            ("scheduler", scheduler),
            ("receipt timers", timers),
            ("score store", store),
            ("admin endpoint", admin),
        ],
        Duration::from_secs(5),
    )
    .await;
    Ok(result?)
}
