//! What ingest's integration tests share: a config on free loopback ports, and a run
//! that stops on demand.

use smsgw_testkit::free_port;

/// A running ingest.
pub type Running = tokio::task::JoinHandle<Result<(), smsgw_ingest::IngestError>>;

/// Ingest on `kafka`, its API (open: `auth = "disabled"`) and admin ports on free
/// loopback addresses.
pub fn config(kafka: &smsgw_kafka::KafkaConfig) -> anyhow::Result<smsgw_ingest::Config> {
    let mut config = smsgw_ingest::Config::new(kafka.clone());
    config.auth = smsgw_runtime::auth::AuthMode::Disabled;
    config.listen = format!("127.0.0.1:{}", free_port()).parse()?;
    config.admin_listen = format!("127.0.0.1:{}", free_port()).parse()?;
    Ok(config)
}

/// Runs ingest with `config` until the returned trigger fires.
pub fn start(config: smsgw_ingest::Config) -> (tokio::sync::oneshot::Sender<()>, Running) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let svc = tokio::spawn(smsgw_ingest::run(config, async move {
        let _ = stopped.await;
    }));
    (stop, svc)
}

/// Ingest on `kafka`, its API open on a free port: the config, the stop trigger, the task.
pub fn start_ingest(
    kafka: &smsgw_kafka::KafkaConfig,
) -> anyhow::Result<(
    smsgw_ingest::Config,
    tokio::sync::oneshot::Sender<()>,
    Running,
)> {
    let config = config(kafka)?;
    let (stop, svc) = start(config.clone());
    Ok((config, stop, svc))
}
