//! The binds of one carrier that can submit (transmitter and transceiver sessions), each
//! with its own window. Sessions put their client in when bound and take it out when the
//! link drops; submits take a window slot on one of them, round-robin.

use rusmppc::Client;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

/// One bound session that can submit.
#[derive(Debug, Clone)]
struct Bind {
    slot: usize,
    client: Client,
    window: Arc<Semaphore>,
}

/// A window slot on one bind: the `submit_sm` goes out on `client`; dropping it frees the
/// slot.
#[derive(Debug)]
pub struct Lease {
    /// The bound session.
    pub client: Client,
    /// Which bind of the carrier (for logs).
    pub slot: usize,
    _permit: OwnedSemaphorePermit,
    in_use: prometheus::IntGauge,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.in_use.dec();
    }
}

/// The submitting binds of a carrier.
#[derive(Debug, Clone)]
pub struct BindPool {
    binds: Arc<watch::Sender<Vec<Bind>>>,
    next: Arc<AtomicUsize>,
    window: usize,
    in_use: prometheus::IntGauge,
}

impl BindPool {
    /// An empty pool whose binds each allow `window` outstanding submits; `in_use` counts
    /// the slots taken.
    pub fn new(window: usize, in_use: prometheus::IntGauge) -> Self {
        BindPool {
            binds: Arc::new(watch::Sender::new(Vec::new())),
            next: Arc::new(AtomicUsize::new(0)),
            window,
            in_use,
        }
    }

    /// A session in `slot` is bound. Returns true if it is the only one (the carrier came up).
    pub fn up(&self, slot: usize, client: Client, wake: crate::guard::Wake) -> bool {
        let window = Arc::new(Semaphore::new(self.window));
        tokio::spawn(nudge(client.clone(), window.clone(), self.window, wake));
        let mut first = false;
        self.binds.send_modify(|b| {
            b.retain(|x| x.slot != slot);
            b.push(Bind {
                slot,
                client,
                window,
            });
            first = b.len() == 1;
        });
        first
    }

    /// The session in `slot` is gone. Returns true if no bind is left (the carrier is down).
    pub fn down(&self, slot: usize) -> bool {
        let mut empty = false;
        self.binds.send_modify(|b| {
            let before = b.len();
            b.retain(|x| x.slot != slot);
            empty = before > 0 && b.is_empty();
        });
        empty
    }

    /// Sessions bound now.
    pub fn bound(&self) -> usize {
        self.binds.borrow().len()
    }

    /// A window slot on some bind: a free one if any (round-robin), else the next one in
    /// turn once it frees up. `None` if no bind comes up within `grace`.
    pub async fn lease(&self, grace: Duration) -> Option<Lease> {
        let deadline = tokio::time::Instant::now() + grace;
        let mut rx = self.binds.subscribe();
        loop {
            let binds = tokio::time::timeout_at(deadline, rx.wait_for(|b| !b.is_empty()))
                .await
                .ok()?
                .ok()?
                .clone();
            let start = self.next.fetch_add(1, Ordering::Relaxed);
            let n = binds.len();
            for i in 0..n {
                let b = &binds[(start + i) % n];
                if let Ok(p) = b.window.clone().try_acquire_owned() {
                    return Some(self.lease_of(b, p));
                }
            }
            // Every window is full: wait for the bind whose turn it is, or for the set of
            // binds to change.
            let b = &binds[start % n];
            tokio::select! {
                p = tokio::time::timeout_at(deadline, b.window.clone().acquire_owned()) => {
                    let p = p.ok()?.ok()?;
                    return Some(self.lease_of(b, p));
                }
                _ = rx.changed() => continue,
            }
        }
    }

    fn lease_of(&self, b: &Bind, permit: OwnedSemaphorePermit) -> Lease {
        self.in_use.inc();
        Lease {
            client: b.client.clone(),
            slot: b.slot,
            _permit: permit,
            in_use: self.in_use.clone(),
        }
    }
}

/// How often a bind with submits outstanding wakes its SMPP client.
const NUDGE_EVERY: Duration = Duration::from_millis(2);

/// Works around a lost wakeup in the SMPP client (rusmppc 0.4.0; see
/// [`crate::guard::Wake`]): while submits are outstanding on the bind, wake its
/// connection task every [`NUDGE_EVERY`], so a burst larger than the client's per-poll
/// limits is written within milliseconds instead of sitting queued until the carrier
/// happens to send something. Ends when the session closes.
async fn nudge(client: Client, window: Arc<Semaphore>, size: usize, wake: crate::guard::Wake) {
    let mut tick = tokio::time::interval(NUDGE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if window.is_closed() || client.is_closed() {
            return;
        }
        if window.available_permits() < size {
            wake.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> Client {
        let (a, _b) = tokio::io::duplex(64);
        rusmppc::ConnectionBuilder::new().connected(a).0
    }

    fn up(pool: &BindPool, slot: usize) -> bool {
        let (_, wake) = crate::guard::test_wake();
        pool.up(slot, client(), wake)
    }

    fn gauge() -> prometheus::IntGauge {
        prometheus::IntGauge::new("in_use", "test").unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn leases_spread_over_binds_and_never_exceed_a_window() {
        let in_use = gauge();
        let pool = BindPool::new(2, in_use.clone());
        assert!(up(&pool, 0));
        assert!(!up(&pool, 1));
        let grace = Duration::from_secs(1);
        let mut leases = Vec::new();
        for _ in 0..4 {
            leases.push(pool.lease(grace).await.expect("a free slot"));
        }
        let on = |slot| leases.iter().filter(|l| l.slot == slot).count();
        assert_eq!((on(0), on(1)), (2, 2));
        assert_eq!(in_use.get(), 4);
        // Both windows are full: the fifth waits, then gets the slot that frees up.
        assert!(pool.lease(Duration::from_millis(50)).await.is_none());
        let freed = leases.remove(0).slot;
        let fifth = pool.lease(grace).await.expect("freed slot");
        assert_eq!(fifth.slot, freed);
        drop(leases);
        drop(fifth);
        assert_eq!(in_use.get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn no_bind_means_no_lease_and_a_late_bind_is_used() {
        let pool = BindPool::new(1, gauge());
        assert!(pool.lease(Duration::from_millis(100)).await.is_none());
        let p = pool.clone();
        let waiter =
            tokio::spawn(async move { p.lease(Duration::from_secs(5)).await.map(|l| l.slot) });
        tokio::time::sleep(Duration::from_millis(10)).await;
        up(&pool, 7);
        assert_eq!(waiter.await.unwrap(), Some(7));
        assert!(pool.down(7));
        assert!(!pool.down(7), "already gone");
        assert_eq!(pool.bound(), 0);
    }
}
