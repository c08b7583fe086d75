//! Tailing a topic into memory: read everything from the beginning (every partition by
//! assignment, no group membership), never commit, and know how fresh the copy is.
//!
//! [`TailState::caught_up`] resolves once the copy holds every record that was in the
//! topic when tailing began. With a refresh interval, the tailer also keeps a freshness
//! barrier: [`TailState::fresh_after`]`(t)` resolves once the copy holds every record the
//! broker had acknowledged at time `t` (it fetches high watermarks at some time
//! `t_w >= t`, then waits until it has read up to them).

use crate::{KafkaConfig, KafkaError};
use futures::StreamExt;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::Message;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How far a tailer has read.
#[derive(Debug)]
pub struct TailState {
    caught_up: watch::Sender<bool>,
    fresh_as_of: watch::Sender<i64>,
}

impl Default for TailState {
    fn default() -> Self {
        TailState {
            caught_up: watch::channel(false).0,
            fresh_as_of: watch::channel(i64::MIN).0,
        }
    }
}

impl TailState {
    /// Resolves once the records present at startup have been read.
    pub async fn caught_up(&self) {
        let _ = self.caught_up.subscribe().wait_for(|c| *c).await;
    }

    /// Resolves once every record acknowledged by the broker at `t_ms` has been read.
    pub async fn fresh_after(&self, t_ms: i64) {
        let _ = self.fresh_as_of.subscribe().wait_for(|f| *f >= t_ms).await;
    }

    /// Declares the copy complete up to `t_ms` (for tests, and for copies known complete).
    pub fn mark_fresh(&self, t_ms: i64) {
        self.fresh_as_of.send_replace(t_ms);
        self.caught_up.send_replace(true);
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, rdkafka::error::KafkaError> + Send + 'static,
) -> Result<T, KafkaError> {
    crate::off_runtime(f)
        .await
        .ok_or_else(|| KafkaError::Config("blocking Kafka call failed".into()))?
        .map_err(KafkaError::from)
}

async fn watermarks(
    consumer: &Arc<BaseConsumer>,
    topic: &str,
    partitions: &[i32],
) -> Result<HashMap<i32, (i64, i64)>, KafkaError> {
    let (c, t, ps) = (consumer.clone(), topic.to_string(), partitions.to_vec());
    blocking(move || {
        let mut out = HashMap::new();
        for p in ps {
            out.insert(p, c.fetch_watermarks(&t, p, Duration::from_secs(10))?);
        }
        Ok(out)
    })
    .await
}

/// Reads `topic` from the beginning into `on_record` until `shutdown`.
/// `refresh` sets how often the freshness barrier advances (`None`: only catch up once).
pub async fn tail<F>(
    kafka: &KafkaConfig,
    topic: &str,
    refresh: Option<Duration>,
    state: &TailState,
    shutdown: impl Future<Output = ()>,
    mut on_record: F,
) -> Result<(), KafkaError>
where
    F: FnMut(&crate::Incoming<'_>),
{
    let group = format!("smsgw-tail-{}", uuid_like());
    let consumer: Arc<StreamConsumer> = Arc::new(
        kafka
            .client_config(&[
                ("group.id", &group),
                ("enable.auto.commit", "false"),
                ("auto.offset.reset", "earliest"),
                ("fetch.wait.max.ms", crate::consumer::FETCH_WAIT_MAX_MS),
            ])
            .create()
            .map_err(|e| KafkaError::Config(e.to_string()))?,
    );
    // Watermark requests go through a client of their own: on the reading client's
    // connection they would queue behind its fetches, which a broker may hold for
    // fetch.wait.max.ms each (Tansu 0.6 always does), and the barrier would lag by that.
    let marks_client: Arc<BaseConsumer> = Arc::new(
        kafka
            .client_config(&[("group.id", &group)])
            .create()
            .map_err(|e| KafkaError::Config(e.to_string()))?,
    );
    tokio::pin!(shutdown);
    // A busy broker can take longer than a request timeout to answer; the copy must not
    // go stale for good because of that, so the tail retries until it is told to stop.
    let Some(partitions) = retrying(topic, "metadata", &mut shutdown, || {
        let (c, t) = (consumer.clone(), topic.to_string());
        blocking(move || {
            let md = c.fetch_metadata(Some(&t), Duration::from_secs(10))?;
            Ok(md
                .topics()
                .iter()
                .flat_map(|t| t.partitions())
                .map(|p| p.id())
                .collect::<Vec<i32>>())
        })
    })
    .await
    else {
        return Ok(());
    };
    let mut next: HashMap<i32, i64> = HashMap::new();
    let reached = |next: &HashMap<i32, i64>, t: &HashMap<i32, (i64, i64)>| {
        t.iter()
            .all(|(p, (low, high))| high <= low || next.get(p).is_some_and(|n| n >= high))
    };
    // Every partition from the beginning, by assignment: a tail never commits, so it has
    // no use for group membership, whose joins, heartbeats and leaves cost the broker
    // (and Tansu 0.6's sqlite engine panics on a group update that fails under load).
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in &partitions {
        tpl.add_partition_offset(topic, *p, rdkafka::Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let start = crate::now_ms();
    let Some(first) = retrying(topic, "watermarks", &mut shutdown, || {
        watermarks(&marks_client, topic, &partitions)
    })
    .await
    else {
        return Ok(());
    };
    let mut target = Some((start, first));
    let mut ticker = tokio::time::interval(refresh.unwrap_or(Duration::from_secs(3600)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stream_consumer = consumer.clone();
    let mut stream = stream_consumer.stream();
    loop {
        if let Some((t_w, marks)) = &target {
            if reached(&next, marks) {
                state.fresh_as_of.send_replace(*t_w);
                state.caught_up.send_replace(true);
                target = None;
            }
        }
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            m = stream.next() => match m {
                Some(Ok(m)) => {
                    on_record(&crate::Incoming::from_message(&m));
                    next.insert(m.partition(), m.offset() + 1);
                }
                Some(Err(e)) => tracing::warn!(topic, error = %e, "tail read error"),
                None => break,
            },
            _ = ticker.tick(), if target.is_none() && refresh.is_some() => {
                let t_w = crate::now_ms();
                // With the broker unreachable this takes its full timeout per partition:
                // shutdown must not wait for it.
                let marks = tokio::select! {
                    biased;
                    _ = &mut shutdown => break,
                    m = watermarks(&marks_client, topic, &partitions) => m,
                };
                match marks {
                    Ok(marks) => {
                        tracing::trace!(topic, took_ms = crate::now_ms() - t_w, ?marks, "tail watermarks");
                        target = Some((t_w, marks))
                    }
                    // The next tick tries again; until then the barrier stays where it is.
                    Err(e) => tracing::warn!(topic, error = %e, "tail could not read watermarks; retrying"),
                }
            }
        }
    }
    Ok(())
}

/// Runs `attempt` until it succeeds (backing off from 100 ms to 5 s between failures,
/// each logged) or `shutdown` resolves (`None`).
async fn retrying<T, Fut>(
    topic: &str,
    what: &str,
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
    mut attempt: impl FnMut() -> Fut,
) -> Option<T>
where
    Fut: Future<Output = Result<T, KafkaError>>,
{
    let mut backoff = Duration::from_millis(100);
    loop {
        tokio::select! {
            _ = shutdown.as_mut() => return None,
            r = attempt() => match r {
                Ok(v) => return Some(v),
                Err(e) => tracing::warn!(topic, what, error = %e, retry_in_ms = backoff.as_millis() as u64, "tail could not start; retrying"),
            },
        }
        tokio::select! {
            _ = shutdown.as_mut() => return None,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}-{}",
        std::process::id(),
        crate::now_ms(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Spawns a [`tail`] of `topic` that decodes each record as `T` and hands it to `apply`
/// (undecodable records are skipped with a warning: the topic's writers are ours).
/// Returns the tail's state, to wait on `caught_up` / `fresh_after`, and the task.
pub fn spawn_tail<T, F>(
    kafka: &KafkaConfig,
    topic: String,
    refresh: Option<Duration>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    mut apply: F,
) -> (Arc<TailState>, tokio::task::JoinHandle<()>)
where
    T: smsgw_codec::AvroRecord,
    F: FnMut(T) + Send + 'static,
{
    let state = Arc::new(TailState::default());
    let (kafka, st) = (kafka.clone(), state.clone());
    let task = tokio::spawn(async move {
        let r = tail(&kafka, &topic, refresh, &st, shutdown, |m| {
            match m.payload.map(T::decode) {
                Some(Ok(v)) => apply(v),
                Some(Err(e)) => {
                    tracing::warn!(topic = %topic, error = %e, "undecodable record skipped")
                }
                None => {}
            }
        })
        .await;
        if let Err(e) = r {
            tracing::error!(topic = %topic, error = %e, "tail stopped; this copy goes stale");
        }
    });
    (state, task)
}
