//! A carrier's throughput limit: a token bucket in messages (segments) per second,
//! shared by every bind of the carrier, that a throttling carrier can slow down.

use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Shared token bucket. Tokens may go negative: a caller that overdraws sleeps until
/// its share is earned, so callers are served in the order they asked.
#[derive(Debug)]
pub struct RateLimiter {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    rate: f64,
    configured: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
    slowed_until: Option<Instant>,
}

impl RateLimiter {
    /// `rate` per second; `None` or 0 means unlimited. The burst is one second's worth.
    pub fn new(rate: Option<f64>) -> Self {
        let rate = rate.filter(|r| *r > 0.0).unwrap_or(f64::INFINITY);
        let burst = if rate.is_finite() {
            rate.max(1.0)
        } else {
            f64::INFINITY
        };
        RateLimiter {
            state: Mutex::new(State {
                rate,
                configured: rate,
                burst,
                tokens: burst,
                last: Instant::now(),
                slowed_until: None,
            }),
        }
    }

    /// Waits until `n` segments may be sent.
    pub async fn acquire(&self, n: u32) {
        let wait = {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if s.rate.is_infinite() {
                return;
            }
            let now = Instant::now();
            if s.slowed_until.is_some_and(|t| now >= t) {
                s.rate = s.configured;
                s.slowed_until = None;
            }
            let earned = now.duration_since(s.last).as_secs_f64() * s.rate;
            s.tokens = (s.tokens + earned).min(s.burst);
            s.last = now;
            s.tokens -= n as f64;
            if s.tokens >= 0.0 {
                return;
            }
            Duration::from_secs_f64(-s.tokens / s.rate)
        };
        tokio::time::sleep(wait).await;
    }

    /// The carrier said it is overloaded: halve the rate (down to 1/s) for `for_`.
    /// An unlimited carrier gets a limit of `fallback` per second for that time.
    pub fn slow_down(&self, for_: Duration, fallback: f64) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let current = if s.rate.is_finite() { s.rate } else { fallback };
        s.rate = (current / 2.0).max(1.0);
        s.burst = s.burst.min(s.rate.max(1.0));
        s.tokens = s.tokens.min(s.burst);
        s.last = now;
        s.slowed_until = Some(now + for_);
    }

    /// The rate in force.
    pub fn rate(&self) -> f64 {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn limits_to_the_rate_after_the_burst() {
        let l = RateLimiter::new(Some(10.0));
        let t0 = Instant::now();
        for _ in 0..30 {
            l.acquire(1).await;
        }
        // 10 from the burst, then 20 at 10/s.
        let took = t0.elapsed().as_secs_f64();
        assert!((1.9..=2.1).contains(&took), "{took}");
    }

    #[tokio::test(start_paused = true)]
    async fn segments_count_and_unlimited_never_waits() {
        let l = RateLimiter::new(Some(10.0));
        let t0 = Instant::now();
        l.acquire(10).await;
        l.acquire(5).await;
        assert!((t0.elapsed().as_secs_f64() - 0.5).abs() < 0.01);
        let u = RateLimiter::new(None);
        let t0 = Instant::now();
        for _ in 0..1000 {
            u.acquire(3).await;
        }
        assert_eq!(t0.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn throttling_halves_the_rate_for_a_while() {
        let l = RateLimiter::new(Some(100.0));
        l.slow_down(Duration::from_secs(5), 50.0);
        assert_eq!(l.rate(), 50.0);
        tokio::time::advance(Duration::from_secs(6)).await;
        l.acquire(1).await;
        assert_eq!(l.rate(), 100.0);
        let u = RateLimiter::new(None);
        u.slow_down(Duration::from_secs(1), 200.0);
        assert_eq!(u.rate(), 100.0);
    }
}
