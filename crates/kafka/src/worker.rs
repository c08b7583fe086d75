//! The one consumer loop every smsgw service runs its input through.
//!
//! [`run_loop`] owns what every at-least-once consumer needs, in one place: it takes
//! records while fewer than `max_in_flight` are unfinished, hands each to a [`Worker`],
//! stores a partition's offset only once every record up to it is reported finished
//! (through [`Done`], from any task, in any order), tells the worker about rebalances
//! (`on_assigned`, `on_revoked`; under static assignment the one assignment at join),
//! calls `on_tick` for timers, and at shutdown drains for at most `drain`, then commits
//! and closes. A revoked partition's unfinished records are forgotten after librdkafka
//! commits what was finished (auto-commit commits on revoke): their reports are then
//! ignored and the partition's next owner reads those records again.

use crate::consumer::{close, store_done, GroupConsumer, Incoming, OffsetTracker};
use crate::KafkaError;
use rdkafka::consumer::Consumer;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// A partition assignment change, as the consumer context saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rebalanced {
    /// These partitions are now this instance's.
    Assigned(Vec<(String, i32)>),
    /// These partitions are no longer this instance's.
    Revoked(Vec<(String, i32)>),
}

/// Where a record came from: what a worker reports finished.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RecordAt {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

impl Incoming<'_> {
    /// Where this record came from.
    pub fn at(&self) -> RecordAt {
        RecordAt {
            topic: self.topic.to_string(),
            partition: self.partition,
            offset: self.offset,
        }
    }
}

#[derive(Debug)]
enum Report {
    /// Everything the record caused is stored: its offset may be committed.
    Finished(RecordAt),
    /// Given up at shutdown: never stored, so the record is read again.
    Abandoned(RecordAt),
    /// A write the broker refused for good: the loop stops with it.
    Failed(KafkaError),
}

/// How workers report records finished. Cheap to clone; usable from any task.
#[derive(Debug, Clone)]
pub struct Done {
    tx: mpsc::UnboundedSender<Report>,
}

impl Done {
    /// Everything `at` caused is stored.
    pub fn finish(&self, at: RecordAt) {
        let _ = self.tx.send(Report::Finished(at));
    }

    /// `at` was given up (shutdown): it stays uncommitted and is read again.
    pub fn abandon(&self, at: RecordAt) {
        let _ = self.tx.send(Report::Abandoned(at));
    }

    /// A write failed for good: the loop stops with `error` (the service restarts and
    /// reads the unfinished records again).
    pub fn fail(&self, error: KafkaError) {
        let _ = self.tx.send(Report::Failed(error));
    }
}

/// Records whose outputs are on their way to the broker, shared with the tasks that
/// wait for the acknowledgements.
///
/// A record read again while its first reading is here (a partition revoked and given
/// back to this instance, which then reads from the last commit) must not be handled
/// again: a worker that remembers what it did would produce nothing and report it
/// finished at once, its offset would be committed, and a crash before the first
/// reading's outputs were stored would lose them for good. Skip such a record: the
/// first reading's report finishes it (the same topic, partition and offset). Insert
/// before the wait starts; remove *before* reporting, so that a reading taken after the
/// report is handled again and one taken before it is finished by it.
#[derive(Debug, Clone, Default)]
pub struct Unstored(Arc<std::sync::Mutex<std::collections::HashSet<RecordAt>>>);

impl Unstored {
    fn set(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<RecordAt>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `at`'s outputs are on their way.
    pub fn insert(&self, at: RecordAt) {
        self.set().insert(at);
    }

    /// `at`'s outputs are stored (or failed for good); call before reporting it.
    pub fn remove(&self, at: &RecordAt) {
        self.set().remove(at);
    }

    /// True when `at` was read before and its outputs are still on their way: skip it.
    pub fn contains(&self, at: &RecordAt) -> bool {
        self.set().contains(at)
    }
}

/// A service's side of the loop.
#[allow(async_fn_in_trait)]
pub trait Worker {
    /// Takes one record. Report it through `done` once everything it caused is stored
    /// (now, or later from another task); a record never reported stays uncommitted.
    /// An error stops the loop (and the service).
    async fn on_record(&mut self, input: &Incoming<'_>, done: &Done) -> Result<(), KafkaError>;

    /// Timers, every [`LoopOptions::tick`].
    async fn on_tick(&mut self, _now_ms: i64, _done: &Done) -> Result<(), KafkaError> {
        Ok(())
    }

    /// Partitions this instance now owns (at start, and after each rebalance).
    async fn on_assigned(&mut self, _partitions: &[(String, i32)]) -> Result<(), KafkaError> {
        Ok(())
    }

    /// Partitions taken away: drop their in-flight state. What was finished is
    /// committed; the rest is the next owner's to read again.
    async fn on_revoked(&mut self, _partitions: &[(String, i32)]) {}

    /// Reading failed (the broker is unreachable or failing): records stored now may
    /// be read late. Called at every consume error.
    fn on_read_error(&mut self, _now_ms: i64) {}
}

/// How long the loop may stay full before it pauses its partitions and polls again.
const PAUSE_AFTER: Duration = Duration::from_millis(500);

/// How the loop runs.
#[derive(Debug, Clone)]
pub struct LoopOptions {
    /// Most records taken and not yet finished; more are not read until some finish.
    pub max_in_flight: usize,
    /// How often `on_tick` runs (`None`: never).
    pub tick: Option<Duration>,
    /// How long shutdown waits for unfinished records before it commits and closes.
    pub drain: Duration,
}

/// Runs `worker` over `consumer`'s records until `shutdown`, then drains (see the
/// module docs). Returns the first error a worker reported.
pub async fn run_loop<W: Worker>(
    consumer: Arc<GroupConsumer>,
    worker: &mut W,
    opts: LoopOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), KafkaError> {
    let mut rebalances = consumer.context().events();
    let (tx, mut reports) = mpsc::unbounded_channel();
    let done = Done { tx };
    let mut tracker = OffsetTracker::default();
    let mut tick = tokio::time::interval(opts.tick.unwrap_or(Duration::from_secs(3600)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    // With `max_in_flight` records unfinished the loop stops reading. If that lasts
    // [`PAUSE_AFTER`], the partitions are paused and the consumer is polled again: it
    // must be, or rebalances (served from the poll) stall the whole group and librdkafka
    // leaves it after `max.poll.interval.ms`. Not at once: a pause drops what was
    // fetched and a resume fetches again, too slow to do at every full window.
    //
    // Only a group member needs that. Under static assignment there is no rebalance to
    // serve, so a full loop simply stops taking records: pausing would only drop the
    // prefetched records and fetch them again at every resume, and on Tansu each fetch
    // reads from its offset to the end of the partition, so a consumer with a backlog
    // (the dispatcher behind its carrier window) paid for the backlog twice a second.
    let may_pause = consumer.subscription().map_or(true, |s| s.count() > 0);
    let mut paused = false;
    let mut full_since: Option<tokio::time::Instant> = None;
    let result: Result<(), KafkaError> = async {
        loop {
            let full = tracker.pending() >= opts.max_in_flight;
            if !full && paused {
                consumer.resume(&consumer.assignment()?)?;
                paused = false;
            }
            full_since = if full {
                full_since.or_else(|| Some(tokio::time::Instant::now()))
            } else {
                None
            };
            let pause_at = full_since.map(|t| t + PAUSE_AFTER);
            if full
                && may_pause
                && !paused
                && pause_at.is_some_and(|t| t <= tokio::time::Instant::now())
            {
                consumer.pause(&consumer.assignment()?)?;
                paused = true;
            }
            let waiting_to_pause = full && may_pause && !paused;
            tokio::select! {
                biased;
                _ = &mut shutdown => return Ok(()),
                Some(change) = rebalances.recv() => match change {
                    Rebalanced::Assigned(ps) => {
                        // A partition keeps librdkafka's pause flag across an eager
                        // revoke and re-assign: set it for the new ones explicitly.
                        let mut tpl = rdkafka::TopicPartitionList::new();
                        for (t, p) in &ps {
                            tpl.add_partition(t, *p);
                        }
                        if paused {
                            consumer.pause(&tpl)?;
                        } else {
                            consumer.resume(&tpl)?;
                        }
                        worker.on_assigned(&ps).await?
                    }
                    Rebalanced::Revoked(ps) => {
                        for (t, p) in &ps {
                            tracker.forget(t, *p);
                        }
                        worker.on_revoked(&ps).await;
                    }
                },
                Some(report) = reports.recv() => settle(&consumer, &mut tracker, report)?,
                _ = tick.tick(), if opts.tick.is_some() => {
                    tokio::select! {
                        biased;
                        _ = &mut shutdown => return Ok(()),
                        r = worker.on_tick(crate::now_ms(), &done) => r?,
                    }
                }
                _ = tokio::time::sleep_until(pause_at.unwrap_or_else(tokio::time::Instant::now)),
                    if waiting_to_pause => {}
                // Not while full, unless paused (see `paused`); a record fetched just
                // before the pause is still taken.
                msg = consumer.recv(), if !full || paused => {
                    let msg = match msg {
                        Ok(m) => m,
                        Err(e) => {
                            tracing::warn!(error = %e, "consume error; continuing");
                            worker.on_read_error(crate::now_ms());
                            continue;
                        }
                    };
                    let input = Incoming::from_message(&msg);
                    tracker.begin(input.topic, input.partition, input.offset);
                    // A worker may wait on something shutdown stops (the router waits for
                    // a fresh opt-out copy): shutdown drops the unfinished record, which
                    // stays uncommitted and is read again.
                    tokio::select! {
                        biased;
                        _ = &mut shutdown => {
                            tracker.abandon(input.topic, input.partition, input.offset);
                            return Ok(());
                        }
                        r = worker.on_record(&input, &done) => r?,
                    }
                }
            }
        }
    }
    .await;
    // Drain: what finishes in time is stored; the rest is read again after the restart.
    let deadline = tokio::time::Instant::now() + opts.drain;
    while result.is_ok() && tracker.pending() > 0 {
        match tokio::time::timeout_at(deadline, reports.recv()).await {
            Ok(Some(report)) => {
                if let Err(e) = settle(&consumer, &mut tracker, report) {
                    tracing::warn!(error = %e, "shutdown: a write failed; its input will be read again");
                    break;
                }
            }
            Ok(None) => break,
            Err(_) => {
                tracing::warn!(
                    unfinished = tracker.pending(),
                    drain_ms = opts.drain.as_millis() as u64,
                    "shutdown: records unfinished after the drain; they will be read again"
                );
                break;
            }
        }
    }
    close(consumer).await;
    result
}

fn settle(
    consumer: &GroupConsumer,
    tracker: &mut OffsetTracker,
    report: Report,
) -> Result<(), KafkaError> {
    match report {
        Report::Finished(at) => {
            if let Some(safe) = tracker.complete(&at.topic, at.partition, at.offset) {
                store_done(consumer, &at.topic, at.partition, safe);
            }
        }
        Report::Abandoned(at) => tracker.abandon(&at.topic, at.partition, at.offset),
        Report::Failed(e) => return Err(e),
    }
    Ok(())
}
