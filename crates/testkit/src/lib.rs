//! Test support for smsgw's integration and end-to-end tests.
//!
//! [`Broker::start`] runs a real Tansu broker (the `tansu` binary, found through
//! `TANSU_BIN`, `PATH` or `~/.cargo/bin`) on a free loopback port with sqlite storage in
//! a directory of its own, and kills it (and removes the directory) when dropped. Not
//! `memory://`: Tansu 0.6's object-store engine can hide a record from a consumer that
//! tails a partition while others write to it (`tests/broker_visibility.rs`).
//! [`Broker::kafka`] hands out a [`KafkaConfig`] with
//! a unique topic prefix, so tests never share topics. [`eventually`] polls a condition
//! with a deadline instead of sleeping a fixed time.

use anyhow::{bail, Context};
use smsgw_kafka::{KafkaConfig, TopicLayout, Topics};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A Tansu broker process.
#[derive(Debug)]
pub struct Broker {
    child: Child,
    /// `127.0.0.1:<port>`.
    pub addr: String,
    storage: String,
    /// The sqlite storage's directory, removed on drop.
    dir: Option<PathBuf>,
}

/// Path of the tansu binary.
pub fn tansu_bin() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("TANSU_BIN") {
        return Ok(p.into());
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let p = dir.join("tansu");
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    let home = std::env::var_os("HOME").context("HOME unset")?;
    let p = PathBuf::from(home).join(".cargo/bin/tansu");
    if p.is_file() {
        Ok(p)
    } else {
        bail!("tansu not found: run `make deps` (cargo install tansu --version 0.6.0 --locked --features dynostore,libsql)")
    }
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Broker {
    /// Starts Tansu with sqlite storage in a new temporary directory and waits until it
    /// accepts connections.
    pub fn start() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "smsgw-tansu-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        ));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let storage = format!("sqlite:///{}/tansu.db", dir.display());
        let mut broker = Self::start_with_storage(&storage).inspect_err(|_| {
            let _ = std::fs::remove_dir_all(&dir);
        })?;
        broker.dir = Some(dir);
        Ok(broker)
    }

    /// Starts Tansu with the given storage engine URL.
    /// A port drawn by [`free_port`] can be taken by another test's server before Tansu
    /// binds it; then another port is drawn (five tries).
    pub fn start_with_storage(storage: &str) -> anyhow::Result<Self> {
        let mut tries = 0;
        loop {
            let addr = format!("127.0.0.1:{}", free_port());
            match spawn_tansu(&addr, storage) {
                Ok(child) => {
                    let broker = Broker {
                        child,
                        addr,
                        storage: storage.to_string(),
                        dir: None,
                    };
                    if let Some(path) = storage.strip_prefix("sqlite://") {
                        index_sqlite(path)?;
                    }
                    return Ok(broker);
                }
                Err(e) if tries < 4 => {
                    eprintln!("{e:#}; trying another port");
                    tries += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Kills the broker with SIGKILL (no shutdown of any kind).
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the broker again on the same address and storage (after [`Self::kill9`]).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill9();
        self.child = spawn_tansu(&self.addr, &self.storage)?;
        Ok(())
    }

    /// A Kafka config for this broker with a unique topic prefix.
    pub fn kafka(&self) -> KafkaConfig {
        let mut k = KafkaConfig::new(&self.addr);
        k.topics = Topics::with_prefix(format!(
            "t{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        ));
        k
    }

    /// Creates every smsgw topic for `kafka`'s prefix, with `carriers`' dispatch topics.
    pub async fn bootstrap(&self, kafka: &KafkaConfig, carriers: &[&str]) -> anyhow::Result<()> {
        let layout = TopicLayout {
            events_partitions: 3,
            ingest_partitions: 3,
            receipts_partitions: 3,
            ..TopicLayout::default()
        };
        let carriers: Vec<String> = carriers.iter().map(|s| s.to_string()).collect();
        smsgw_kafka::bootstrap_topics(kafka, &layout.specs(&kafka.topics, &carriers)).await?;
        Ok(())
    }
}

/// Adds the index Tansu 0.6's sqlite engine lacks (`deploy/local/tansu-index.py`):
/// without it every fetched record scans every stored record header, and reading slows
/// as the log grows (30,000 records read back in 53 s instead of 1 s). `path` as in the
/// storage URL after `sqlite://` (a leading `/` for an absolute path).
pub fn index_sqlite(path: &str) -> anyhow::Result<()> {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/local/tansu-index.py"
    );
    let out = Command::new("python3")
        .args([script, path])
        .output()
        .context("running python3 for deploy/local/tansu-index.py")?;
    if !out.status.success() {
        bail!(
            "tansu-index.py {path}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Spawns Tansu on `addr` and waits until it accepts connections.
fn spawn_tansu(addr: &str, storage: &str) -> anyhow::Result<Child> {
    let url = format!("tcp://{addr}");
    // The broker's own log, for when it misbehaves: $TMPDIR/smsgw-tansu-<port>.log.
    let port = addr.rsplit(':').next().unwrap_or("0");
    let log = std::fs::File::create(std::env::temp_dir().join(format!("smsgw-tansu-{port}.log")))?;
    let mut child = Command::new(tansu_bin()?)
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
            "--storage-engine",
            storage,
        ])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("spawning tansu")?;
    let port: u16 = port.parse().context("broker port")?;
    let deadline = Instant::now() + Duration::from_secs(20);
    // Something else may hold the port (a test's other server drew the same free port):
    // then Tansu exits and a connect would reach the other server, so the test would run
    // against a stranger. Wait until the listening socket is this child's own.
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("tansu exited ({status}) before listening on {addr}: is the port taken?");
        }
        if listening(child.id(), port) {
            return Ok(child);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("tansu did not listen on {addr} within 20 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether process `pid` holds a socket listening on TCP `port` (Linux: the listening
/// sockets' inodes in /proc/net/tcp*, matched against the process's descriptors).
/// Where /proc is missing, whether anything accepts a connection on the port.
fn listening(pid: u32, port: u16) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
    };
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address is HEXIP:HEXPORT, st 0A is LISTEN, inode is the 10th field.
            let local_port = f
                .get(1)
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) && f.get(3) == Some(&"0A") {
                if let Some(inode) = f.get(9) {
                    inodes.push(format!("socket:[{inode}]"));
                }
            }
        }
    }
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .map(|l| inodes.iter().any(|i| l.as_os_str() == i.as_str()))
            .unwrap_or(false)
    })
}

/// A consumer of `topic` from its beginning, in a group of its own.
fn from_start(
    kafka: &KafkaConfig,
    topic: &str,
) -> anyhow::Result<smsgw_kafka::rdkafka::consumer::StreamConsumer> {
    use smsgw_kafka::rdkafka::consumer::{Consumer, StreamConsumer};
    let c: StreamConsumer = kafka
        .client_config(&[
            ("group.id", &uuid::Uuid::new_v4().to_string()),
            ("auto.offset.reset", "earliest"),
        ])
        .create()?;
    c.subscribe(&[topic])?;
    Ok(c)
}

/// A record's key (lossy UTF-8) and value (`None` for a tombstone).
fn key_value(m: &smsgw_kafka::rdkafka::message::BorrowedMessage<'_>) -> (String, Option<Vec<u8>>) {
    use smsgw_kafka::rdkafka::Message as _;
    let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
    (key, m.payload().map(<[u8]>::to_vec))
}

/// Reads `topic` from the beginning until no record arrives for `idle` (at least 20 s
/// for the first one): key and value (`None` for a tombstone) of every record.
pub async fn read_all(
    kafka: &KafkaConfig,
    topic: &str,
    idle: Duration,
) -> anyhow::Result<Vec<(String, Option<Vec<u8>>)>> {
    let c = from_start(kafka, topic)?;
    let mut out = Vec::new();
    // Joining the group takes a few seconds before the first record can arrive.
    let first = idle.max(Duration::from_secs(20));
    while let Ok(m) =
        tokio::time::timeout(if out.is_empty() { first } else { idle }, c.recv()).await
    {
        let m = m?;
        out.push(key_value(&m));
    }
    Ok(out)
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Polls `check` every 50 ms until it returns `Some`, or fails after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends service logs to the test output when `RUST_LOG` is set.
pub fn init_logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// Reads `n` records of `topic` from the beginning (a fresh group), decoded as `T`.
pub async fn read_records<T: smsgw_codec::AvroRecord>(
    kafka: &KafkaConfig,
    topic: &str,
    n: usize,
    timeout: Duration,
) -> anyhow::Result<Vec<T>> {
    read_raw(kafka, topic, n, timeout)
        .await?
        .into_iter()
        .map(|(_, v)| Ok(T::decode(&v.unwrap_or_default())?))
        .collect()
}

/// Reads `n` records of `topic` from the beginning (a fresh group): key (lossy UTF-8)
/// and value (`None` for a tombstone).
pub async fn read_raw(
    kafka: &KafkaConfig,
    topic: &str,
    n: usize,
    timeout: Duration,
) -> anyhow::Result<Vec<(String, Option<Vec<u8>>)>> {
    let c = from_start(kafka, topic)?;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut out = Vec::new();
    while out.len() < n {
        let m = tokio::time::timeout_at(deadline, c.recv())
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "only {} of {n} records on {topic} within {timeout:?}",
                    out.len()
                )
            })?;
        match m {
            Ok(m) => out.push(key_value(&m)),
            // A broker that was just restarted: librdkafka reconnects by itself.
            Err(e) => eprintln!("read_raw {topic}: {e}; still reading"),
        }
    }
    Ok(out)
}

/// Produces one Avro record and waits for the broker's acknowledgement.
pub async fn produce<T: smsgw_codec::AvroRecord>(
    kafka: &KafkaConfig,
    topic: &str,
    key: &str,
    value: &T,
) -> anyhow::Result<()> {
    let p = shared_producer(kafka)?;
    smsgw_kafka::send(&p, &smsgw_kafka::OutRecord::avro(topic, key, value)?).await?;
    Ok(())
}

/// One producer per broker address for the whole test process: an idempotent producer
/// costs a metadata and an InitProducerId round trip (about half a second on Tansu) before
/// its first record, which a test producing record by record would pay every time.
fn shared_producer(kafka: &KafkaConfig) -> anyhow::Result<smsgw_kafka::Producer> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static PRODUCERS: OnceLock<Mutex<HashMap<String, smsgw_kafka::Producer>>> = OnceLock::new();
    let mut all = PRODUCERS
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(p) = all.get(&kafka.brokers) {
        return Ok(p.clone());
    }
    let p = smsgw_kafka::Producer::new(kafka)?;
    all.insert(kafka.brokers.clone(), p.clone());
    Ok(p)
}

/// A shutdown trigger and the future a service's `run` waits on.
pub fn stopper() -> (
    tokio::sync::oneshot::Sender<()>,
    impl std::future::Future<Output = ()> + Send + 'static,
) {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    (tx, async move {
        let _ = rx.await;
    })
}

/// A CQL proxy in front of a test CQL server that mishandles one query of the Rust
/// `scylla` driver: kassandra (an in-memory CQL v4 server) reports a bind marker for the
/// literal in `SELECT … FROM system.local WHERE key='local'`, which the driver sends while
/// it reads cluster metadata, so the session never connects. The proxy drops that
/// `WHERE` clause (system.local has one row) from QUERY and PREPARE frames and passes
/// every other byte through untouched, both ways. Our own statements reach the server
/// exactly as the adapter wrote them. Returns the address to connect to.
pub async fn cql_shim(upstream: std::net::SocketAddr) -> anyhow::Result<std::net::SocketAddr> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const QUERY: u8 = 0x07;
    const PREPARE: u8 = 0x09;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else {
                continue;
            };
            tokio::spawn(async move {
                let (mut cr, mut cw) = client.split();
                let (mut sr, mut sw) = server.split();
                let requests = async {
                    loop {
                        let mut header = [0u8; 9];
                        cr.read_exact(&mut header).await?;
                        let len = u32::from_be_bytes([header[5], header[6], header[7], header[8]]);
                        let mut body = vec![0u8; len as usize];
                        cr.read_exact(&mut body).await?;
                        if matches!(header[4], QUERY | PREPARE) && body.len() >= 4 {
                            let qlen =
                                u32::from_be_bytes([body[0], body[1], body[2], body[3]]) as usize;
                            let query = std::str::from_utf8(&body[4..4 + qlen.min(body.len() - 4)])
                                .unwrap_or_default();
                            if query.contains("system.local")
                                && query.contains(" WHERE key='local'")
                            {
                                let fixed = query.replace(" WHERE key='local'", "");
                                let mut b = (fixed.len() as u32).to_be_bytes().to_vec();
                                b.extend_from_slice(fixed.as_bytes());
                                b.extend_from_slice(&body[4 + qlen..]);
                                body = b;
                                header[5..9].copy_from_slice(&(body.len() as u32).to_be_bytes());
                            }
                        }
                        sw.write_all(&header).await?;
                        sw.write_all(&body).await?;
                    }
                    #[allow(unreachable_code)]
                    Ok::<(), std::io::Error>(())
                };
                let responses = tokio::io::copy(&mut sr, &mut cw);
                tokio::select! {
                    _ = requests => {}
                    _ = responses => {}
                }
            });
        }
    });
    Ok(addr)
}

/// The `MessageAccepted` event of message `id`, accepted at 1,000 ms: client `shop`,
/// sender `SHOP`, body `hi` (GSM-7, one segment) to `+447911123456`, every option unset.
/// `change` adjusts the payload first (a callback URL, another destination, ...).
pub fn accepted_event(
    id: &str,
    change: impl FnOnce(&mut smsgw_domain::MessageAccepted),
) -> smsgw_domain::Event {
    let mut a = smsgw_domain::MessageAccepted {
        client_id: "shop".into(),
        idempotency_key: None,
        client_ref: None,
        destination: "+447911123456".into(),
        sender: "SHOP".into(),
        body: "hi".into(),
        encoding: "GSM7".into(),
        segments: 1,
        registered_delivery: None,
        expires_at: None,
        schedule_delivery_at: None,
        callback_url: None,
        send_at: None,
        message_type: None,
    };
    change(&mut a);
    smsgw_domain::Message::new(id)
        .decide(smsgw_domain::Command::Accept(a), 1_000)
        .expect("a new message accepts")
        .remove(0)
}

/// How many records of `topic` consumer group `group` has not committed yet: the sum
/// over partitions of the high watermark minus the committed offset (or the low
/// watermark, when nothing is committed).
pub fn group_lag(kafka: &KafkaConfig, group: &str, topic: &str) -> anyhow::Result<i64> {
    use smsgw_kafka::rdkafka::consumer::{BaseConsumer, Consumer};
    use smsgw_kafka::rdkafka::{Offset, TopicPartitionList};
    let c: BaseConsumer = kafka
        .client_config(&[("group.id", group), ("enable.auto.commit", "false")])
        .create()?;
    let t = Duration::from_secs(10);
    let md = c.fetch_metadata(Some(topic), t)?;
    let mut tpl = TopicPartitionList::new();
    for p in md.topics().iter().flat_map(|t| t.partitions()) {
        tpl.add_partition(topic, p.id());
    }
    let committed = c.committed_offsets(tpl, t)?;
    let mut lag = 0;
    for e in committed.elements() {
        let (low, high) = c.fetch_watermarks(topic, e.partition(), t)?;
        let at = match e.offset() {
            Offset::Offset(o) => o.max(low),
            _ => low,
        };
        lag += (high - at).max(0);
    }
    Ok(lag)
}

/// Every record of `topic` written before the call: the high watermarks are read first,
/// then each partition is read from its start up to them by direct assignment (no group
/// to join). Unlike reading "for a while", it cannot miss a record that is already in
/// the log, and it returns as soon as the end is reached; use it to show that something
/// was *not* written.
pub async fn read_to_end(
    kafka: &KafkaConfig,
    topic: &str,
    timeout: Duration,
) -> anyhow::Result<Vec<(String, Option<Vec<u8>>)>> {
    use smsgw_kafka::rdkafka::consumer::{Consumer, StreamConsumer};
    use smsgw_kafka::rdkafka::{Message as _, Offset, TopicPartitionList};
    let c: StreamConsumer = kafka
        .client_config(&[
            ("group.id", &uuid::Uuid::new_v4().to_string()),
            ("enable.auto.commit", "false"),
        ])
        .create()?;
    let t = Duration::from_secs(10);
    let md = c.fetch_metadata(Some(topic), t)?;
    let mut ends = std::collections::HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in md.topics().iter().flat_map(|t| t.partitions()) {
        let (low, high) = c.fetch_watermarks(topic, p.id(), t)?;
        if high > low {
            ends.insert(p.id(), high);
            tpl.add_partition_offset(topic, p.id(), Offset::Offset(low))?;
        }
    }
    let mut out = Vec::new();
    if ends.is_empty() {
        return Ok(out);
    }
    c.assign(&tpl)?;
    let deadline = tokio::time::Instant::now() + timeout;
    while !ends.is_empty() {
        let m = tokio::time::timeout_at(deadline, c.recv())
            .await
            .map_err(|_| {
                anyhow::anyhow!("{topic}: the end was not reached within {timeout:?}")
            })??;
        let Some(&end) = ends.get(&m.partition()) else {
            continue;
        };
        if m.offset() < end {
            out.push(key_value(&m));
        }
        if m.offset() + 1 >= end {
            ends.remove(&m.partition());
        }
    }
    Ok(out)
}

/// A reader of a topic from its beginning that keeps its place between calls: for tests
/// that answer records as they appear (a stand-in for a service).
pub struct Follower(smsgw_kafka::rdkafka::consumer::StreamConsumer);

impl Follower {
    /// Follows `topic` (in a group of its own) from its first record.
    pub fn new(kafka: &KafkaConfig, topic: &str) -> anyhow::Result<Self> {
        Ok(Follower(from_start(kafka, topic)?))
    }

    /// The next record (key, value), or `None` when none came within `wait`.
    pub async fn next(&self, wait: Duration) -> anyhow::Result<Option<(String, Option<Vec<u8>>)>> {
        match tokio::time::timeout(wait, self.0.recv()).await {
            Ok(m) => Ok(Some(key_value(&m?))),
            Err(_) => Ok(None),
        }
    }
}

/// Creates `name` with `partitions` partitions (replication 1) on `kafka`'s broker.
pub async fn create_topic(kafka: &KafkaConfig, name: &str, partitions: i32) -> anyhow::Result<()> {
    smsgw_kafka::bootstrap_topics(
        kafka,
        &[smsgw_kafka::TopicSpec {
            name: name.to_string(),
            partitions,
            replication: 1,
            configs: vec![],
        }],
    )
    .await?;
    Ok(())
}

/// Makes consumer group `group` rebalance twice: a second member joins on `topic`
/// (waiting, at most 15 s, until the group has given it its share, which may be no
/// partition at all when there are fewer partitions than members), then leaves without
/// committing. An eager rebalance revokes every member's partitions and assigns them
/// again, so the group's members read from their last commits once more: records whose
/// work is still unfinished are read a second time while the first reading is in
/// progress.
pub async fn rebalance_group(kafka: &KafkaConfig, group: &str, topic: &str) -> anyhow::Result<()> {
    use smsgw_kafka::rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
    use std::sync::atomic::{AtomicBool, Ordering};
    /// Notes the member's first assignment, empty or not.
    #[derive(Default)]
    struct Joined(AtomicBool);
    impl smsgw_kafka::rdkafka::ClientContext for Joined {}
    impl ConsumerContext for Joined {
        fn post_rebalance(&self, _: &BaseConsumer<Self>, r: &Rebalance<'_>) {
            if matches!(r, Rebalance::Assign(_)) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
    }
    let (kafka, group, topic) = (kafka.clone(), group.to_string(), topic.to_string());
    tokio::task::spawn_blocking(move || {
        let member: BaseConsumer<Joined> = kafka
            .client_config(&[("group.id", &group), ("enable.auto.commit", "false")])
            .create_with_context(Joined::default())?;
        member.subscribe(&[&topic])?;
        let started = Instant::now();
        while !member.context().0.load(Ordering::SeqCst)
            && started.elapsed() < Duration::from_secs(15)
        {
            let _ = member.poll(Duration::from_millis(100));
        }
        if !member.context().0.load(Ordering::SeqCst) {
            bail!("the second member of {group} was given no assignment on {topic} in 15 s");
        }
        Ok(())
    })
    .await?
}
