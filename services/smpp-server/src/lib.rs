//! smsgw SMPP server: customers' ESMEs bind to smsgw over SMPP 3.4, as they bind to an
//! SMSC.
//!
//! Data flow: an ESME connects to `listen` and binds (transmitter, receiver or
//! transceiver) with a `system_id` and password from [`accounts`]; the account says
//! whom its messages are for, which source addresses and networks it may use, how many
//! binds it may hold and how fast it may send. Each `submit_sm` is read by
//! [`submit::read`] (text in GSM-7, IA5, Latin-1 or UCS-2; `message_payload`; the parts
//! of a long message by UDH or SAR, joined by [`reassembly`] before anything is
//! accepted; receipt request, validity and schedule), checked by the same admission
//! rules as the HTTP API (`smsgw_admission`), and written to the ingest topic as a
//! `SubmitRequest` carrying the gateway's message id. The `submit_sm_resp` carries that
//! id and goes out only once the broker holds the request. From there the message
//! travels like any other (ingest, router, dispatcher, receipt).
//!
//! The server talks to the rest of smsgw only through Kafka. Hostile input is bounded
//! everywhere: connections, PDU size, submits in flight per session (the window),
//! incomplete long messages, garbage PDUs, password checks at once, and each account's
//! rate (`ESME_RTHROTTLED`).

pub mod accounts;
pub mod config;
pub mod frame;
pub mod metrics;
pub mod mo;
pub mod reassembly;
pub mod receipts;
pub mod session;
pub mod status;
pub mod submit;

pub use config::Config;

use accounts::{Account, Accounts, Refusal};
use smsgw_kafka::{KafkaError, OutRecord, Producer, Topics};
use smsgw_runtime::Shutdown;
use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use thiserror::Error;

/// Why the SMPP server stopped.
#[derive(Debug, Error)]
pub enum ServerError {
    /// Invalid configuration: fix it and restart.
    #[error("config: {0}")]
    Config(String),
    /// The Kafka producer could not be created.
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// The SMPP listener could not bind.
    #[error("smpp listener: {0}")]
    Listen(#[from] std::io::Error),
}

/// A token bucket of messages per second: burst equal to one second's rate.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn take(&mut self, now: Instant) -> bool {
        let burst = self.rate.max(1.0);
        self.tokens = (self.tokens
            + now.saturating_duration_since(self.at).as_secs_f64() * self.rate)
            .min(burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What every session shares.
#[derive(Debug)]
pub struct Server {
    /// Configuration.
    pub config: Config,
    /// Topic names.
    pub topics: Topics,
    /// Producer for the ingest and dead-letter topics.
    pub producer: Producer,
    /// Metrics.
    pub metrics: metrics::Metrics,
    /// Default country for national numbers.
    pub country: Option<phonenumber::country::Id>,
    /// The states of SMPP messages, for `query_sm` and `cancel_sm`.
    pub status: Arc<status::Book>,
    accounts: Arc<Accounts>,
    auth: tokio::sync::Semaphore,
    binds: Mutex<HashMap<String, u32>>,
    buckets: Mutex<HashMap<String, Bucket>>,
    receivers: Mutex<HashMap<String, Receivers>>,
    quotas: Mutex<smsgw_admission::quota::Quotas>,
    next_session: std::sync::atomic::AtomicU64,
}

/// An account's sessions on this replica that take receipts, and the switch of its
/// receipt task.
#[derive(Debug)]
struct Receivers {
    sessions: Vec<receipts::Receiver>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Server {
    /// The shared state of a server with this (validated) config.
    pub fn new(
        config: Config,
        producer: Producer,
        metrics: metrics::Metrics,
    ) -> Result<Self, String> {
        let accounts = Arc::new(config.accounts()?);
        let country = config
            .default_country
            .as_deref()
            .and_then(|c| c.parse().ok());
        Ok(Server {
            topics: config.kafka.topics.clone(),
            auth: tokio::sync::Semaphore::new(config.auth_concurrency),
            quotas: Mutex::new(smsgw_admission::quota::Quotas::new(
                config.daily_quotas.clone(),
                config.kafka.instances,
            )),
            status: Arc::new(status::Book::new(config.status_capacity)),
            config,
            producer,
            metrics,
            country,
            accounts,
            binds: Mutex::new(HashMap::new()),
            buckets: Mutex::new(HashMap::new()),
            receivers: Mutex::new(HashMap::new()),
            next_session: std::sync::atomic::AtomicU64::new(1),
        })
    }

    /// This replica's share of a fleet-wide count (at least one).
    fn share(&self, n: f64) -> f64 {
        (n / f64::from(self.config.kafka.instances.max(1))).max(1.0)
    }

    /// Checks a bind's credentials off the async threads, a few at a time.
    async fn authenticate(
        self: &Arc<Self>,
        system_id: String,
        password: String,
        peer: IpAddr,
    ) -> Result<Account, Refusal> {
        let Ok(_permit) = self.auth.acquire().await else {
            return Err(Refusal::Credentials);
        };
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.accounts.authenticate(&system_id, &password, peer))
            .await
            .unwrap_or(Err(Refusal::Credentials))
    }

    /// Counts a new session of `account` unless it already holds its share of binds.
    fn try_bind(&self, account: &Account) -> bool {
        let limit = self.share(f64::from(account.max_binds)) as u32;
        let mut binds = self.binds.lock().unwrap_or_else(|p| p.into_inner());
        let n = binds.entry(account.system_id.clone()).or_default();
        if *n >= limit {
            return false;
        }
        *n += 1;
        self.metrics.sessions.inc();
        true
    }

    fn unbind(&self, system_id: &str) {
        let mut binds = self.binds.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = binds.get_mut(system_id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                binds.remove(system_id);
            }
            self.metrics.sessions.dec();
        }
    }

    /// A new session id.
    fn session_id(&self) -> u64 {
        self.next_session
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// Registers a session that takes the account's receipts; the first one on this
    /// replica starts the account's receipt task.
    fn add_receiver(self: &Arc<Self>, account: &Account, r: receipts::Receiver) {
        let mut all = self.receivers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = all.get_mut(&account.system_id) {
            existing.sessions.push(r);
            return;
        }
        let (stop, stopped) = tokio::sync::watch::channel(false);
        all.insert(
            account.system_id.clone(),
            Receivers {
                sessions: vec![r],
                stop,
            },
        );
        tokio::spawn(receipts::deliver(
            self.clone(),
            account.system_id.clone(),
            account.client_id.clone(),
            stopped,
        ));
    }

    /// Removes a session; the last one on this replica stops the account's receipt
    /// task (its unanswered receipts stay on Kafka for the next reader).
    fn remove_receiver(&self, system_id: &str, session: u64) {
        let mut all = self.receivers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = all.get_mut(system_id) {
            r.sessions.retain(|s| s.session != session);
            if r.sessions.is_empty() {
                let _ = r.stop.send(true);
                all.remove(system_id);
            }
        }
    }

    /// One of the account's receipt sessions, taking turns.
    fn receiver(&self, system_id: &str, turn: usize) -> Option<receipts::Receiver> {
        let all = self.receivers.lock().unwrap_or_else(|p| p.into_inner());
        let sessions = &all.get(system_id)?.sessions;
        (!sessions.is_empty()).then(|| sessions[turn % sessions.len()].clone())
    }

    /// Counts one valid message against its account's daily quota, or refuses it.
    fn within_quota(&self, client_id: &str, now_ms: i64) -> bool {
        self.quotas
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .admit(client_id, now_ms)
            .is_ok()
    }

    /// Takes one message from the account's rate (its share on this replica).
    fn take_token(&self, account: &Account) -> bool {
        let rate = self.share(account.rate);
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        buckets
            .entry(account.system_id.clone())
            .or_insert_with(|| Bucket {
                rate,
                tokens: rate.max(1.0),
                at: now,
            })
            .take(now)
    }

    /// The dead letter of a long message given up incomplete: its parts' text octets
    /// in part order, the addresses and the id it would have had.
    fn incomplete_dead_letter(&self, system_id: &str, p: &reassembly::Pending) -> OutRecord {
        let payload: Vec<u8> = p.parts.values().flatten().copied().collect();
        let headers = vec![
            (
                "smsgw-smpp-system-id".to_string(),
                system_id.as_bytes().to_vec(),
            ),
            (
                "smsgw-smpp-parts".to_string(),
                format!("{:?}", p.parts.keys().collect::<Vec<_>>()).into_bytes(),
            ),
            (
                "smsgw-smpp-data-coding".to_string(),
                p.envelope.data_coding.to_string().into_bytes(),
            ),
        ];
        let input = smsgw_kafka::Incoming {
            topic: "smpp",
            partition: -1,
            offset: -1,
            key: Some(p.message_id.as_bytes()),
            payload: Some(&payload),
            headers,
            timestamp_ms: Some(p.started_ms),
        };
        smsgw_kafka::dead_letter(
            &self.topics.dead_letter(),
            "smpp-server",
            "concatenated message incomplete: not every part arrived before the reassembly timeout or the session's end",
            &input,
            smsgw_kafka::now_ms(),
        )
    }
}

/// Creates the receipt topic of every account that has none (one partition: an
/// account's receipts stay in order).
async fn create_receipt_topics(server: &Server) -> Result<(), ServerError> {
    let c = &server.config;
    let specs: Vec<smsgw_kafka::TopicSpec> = server
        .accounts
        .system_ids()
        .map(|id| smsgw_kafka::TopicSpec {
            name: server.topics.smpp_receipts(id),
            partitions: 1,
            replication: c.receipt_topic_replication,
            configs: vec![("retention.ms".into(), c.receipt_retention_ms.to_string())],
        })
        .collect();
    smsgw_kafka::retry_startup("creating the accounts' receipt topics", || {
        smsgw_kafka::bootstrap_topics(&c.kafka, &specs)
    })
    .await?;
    Ok(())
}

/// Runs the SMPP server until `shutdown` resolves.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    config.validate().map_err(ServerError::Config)?;
    let shutdown = Shutdown::new(shutdown);
    let metrics = metrics::Metrics::new();
    let producer = Producer::new(&config.kafka)?;
    let health = smsgw_runtime::Health::default();
    let _probe = smsgw_kafka::spawn_probe(&config.kafka, health.clone(), shutdown.clone().wait())?;
    let _admin = smsgw_runtime::serve_admin(
        config.admin_listen,
        metrics.registry.clone(),
        health.clone(),
        shutdown.clone().wait(),
    )
    .await
    .map_err(|e| ServerError::Config(e.to_string()))?;
    let listen = config.listen;
    let server = Arc::new(Server::new(config, producer, metrics).map_err(ServerError::Config)?);
    create_receipt_topics(&server).await?;
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(addr = %listen, "SMPP server listening");
    let mo_task = spawn_mo_router(&server, shutdown.clone())?;
    let status_task = {
        let (server, stop) = (server.clone(), shutdown.clone());
        tokio::spawn(async move {
            let state = smsgw_kafka::TailState::default();
            if let Err(e) =
                status::run(&server.config.kafka, &server.status, &state, stop.wait()).await
            {
                tracing::error!(error = %e, "status tail stopped: query_sm and cancel_sm go stale");
            }
        })
    };
    let connections = Arc::new(tokio::sync::Semaphore::new(server.config.max_connections));
    let mut sessions = tokio::task::JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.clone().wait() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            server
                .metrics
                .binds
                .with_label_values(&["max_connections"])
                .inc();
            drop(stream);
            continue;
        };
        let (server, stop) = (server.clone(), shutdown.clone());
        sessions.spawn(async move {
            session::serve(server, stream, peer, stop).await;
            drop(permit);
        });
        while sessions.try_join_next().is_some() {}
    }
    drop(listener);
    while sessions.join_next().await.is_some() {}
    let _ = mo_task.await;
    let _ = status_task.await;
    Ok(())
}

/// Starts the MO router: `smsgw.inbound` to the accounts' topics, until shutdown.
fn spawn_mo_router(
    server: &Arc<Server>,
    shutdown: Shutdown,
) -> Result<tokio::task::JoinHandle<()>, ServerError> {
    let c = &server.config;
    let consumer = smsgw_kafka::consumer(&c.kafka, &c.mo_group_id)?;
    smsgw_kafka::join(&consumer, &c.kafka, &[&server.topics.inbound()])?;
    let server = server.clone();
    Ok(tokio::spawn(async move {
        let mut router = mo::MoRouter {
            accounts: server.accounts.clone(),
            topics: server.topics.clone(),
        };
        let r = smsgw_kafka::run_consumer(
            consumer,
            &server.producer,
            &server.topics.dead_letter(),
            "smpp-server",
            &mut router,
            &server.metrics.mo,
            server.config.window,
            shutdown.wait(),
        )
        .await;
        if let Err(e) = r {
            tracing::error!(error = %e, "MO router stopped");
        }
    }))
}
