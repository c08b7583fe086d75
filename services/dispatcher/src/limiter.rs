//! A carrier's throughput limit: a token bucket in messages (segments) per second,
//! shared by every bind of the carrier, whose rate adapts when the carrier throttles.
//!
//! The adaptation ([`Control`]) is a pure function of what the carrier answered and the
//! clock passed in. Time is cut into control intervals, each judged once it holds at
//! least 20 answers (a quieter interval is added to the next); at the end of each one:
//! - **the first one judged** only measures: it sees our own start, not the carrier;
//! - **no throttle in it**: the rate grows by a tenth (plus one), back up to the
//!   configured `max_rate`; an unlimited carrier whose limit no longer binds (the rate is
//!   twice what it accepts) is unlimited again, burst included;
//! - **throttles in it**: the rate is cut once, however many throttles arrived, to 90 %
//!   of what the carrier accepted in the interval (it takes that much, so a carrier that
//!   throttles above a rate is met near that rate in one step), never below half of what
//!   it accepted recently;
//! - **cuts that did not help**: when three cuts in a row each left the throttled share
//!   at 70 % or more of the share that caused it (fewer are not enough: the first may be
//!   measured on the carrier's burst, the next while its bucket refills), or the floor
//!   allows no further cut, the carrier throttles a share of submits whatever our rate
//!   (per-destination or per-sender limits). The rate goes back to what it was before
//!   the first of those cuts and no cut is made for a hold period (10 intervals,
//!   doubling up to 640 while the same happens again); throttled submits are simply
//!   retried.

use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Growth per interval without throttles: `rate * GROWTH + 1`.
const GROWTH: f64 = 1.1;
/// A cut sets the rate to this share of what the carrier accepted in the interval.
const CUT: f64 = 0.9;
/// The rate never goes below this share of the recently accepted rate.
const FLOOR: f64 = 0.5;
/// How fast the recently accepted rate (the floor's base) forgets a good interval.
const PEAK_DECAY: f64 = 0.5;
/// A cut "helped" when the throttled share fell below this share of what caused it.
const HELPED: f64 = 0.7;
/// An interval is judged only on at least this many answers; fewer are added to the next.
const MIN_SAMPLE: u32 = 20;
/// A window this many intervals old with fewer answers is dropped unjudged.
const STALE_INTERVALS: u32 = 20;
/// Cuts in a row after which an unchanged throttled share means the carrier throttles a
/// share whatever the rate (the first cut may be measured on the carrier's burst, the
/// next while its bucket refills).
const PROBE_CUTS: u32 = 3;
/// Intervals without cuts after cuts that did not help, doubled up to `HOLD_MAX`.
const HOLD_MIN: u32 = 10;
const HOLD_MAX: u32 = 640;

/// The rate adaptation, without I/O or a clock of its own.
#[derive(Debug, Clone)]
pub struct Control {
    /// The configured limit (`INFINITY`: none).
    ceiling: f64,
    /// The limit in force (`INFINITY`: none).
    rate: f64,
    interval: Duration,
    window_start: Instant,
    accepted_segments: f64,
    accepted_submits: u32,
    throttled: u32,
    /// The accepted segments per second of the best recent interval, decaying by
    /// `PEAK_DECAY` with each interval that had traffic.
    recent_accepted: f64,
    /// The throttled share that caused the last cut, until the next interval shows
    /// whether the cut helped.
    pending: Option<f64>,
    /// Cuts in a row that did not lower the throttled share.
    unhelpful: u32,
    /// The rate before the first cut since the last interval without throttles: what
    /// cuts that did not help are undone to.
    run_before: Option<f64>,
    hold_until: Option<Instant>,
    hold: u32,
}

impl Control {
    /// A carrier limited to `ceiling` per second (`INFINITY`: unlimited), adapting every
    /// `interval`, starting at `now`.
    pub fn new(ceiling: f64, interval: Duration, now: Instant) -> Self {
        Control {
            ceiling,
            rate: ceiling,
            interval: interval.max(Duration::from_millis(10)),
            window_start: now,
            accepted_segments: 0.0,
            accepted_submits: 0,
            throttled: 0,
            recent_accepted: 0.0,
            pending: None,
            unhelpful: 0,
            run_before: None,
            hold_until: None,
            hold: HOLD_MIN,
        }
    }

    /// The rate in force (`INFINITY`: unlimited).
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// The burst in force: one second's worth at the configured rate, one interval's
    /// worth while throttling holds the rate below it (a cut must not be followed by a
    /// second's worth of submits at once).
    pub fn burst(&self) -> f64 {
        let window = if self.rate < self.ceiling {
            self.interval.as_secs_f64()
        } else {
            1.0
        };
        (self.rate * window).max(1.0)
    }

    /// The carrier accepted a submit of `segments` at `now`.
    pub fn accepted(&mut self, segments: u32, now: Instant) {
        self.tick(now);
        self.accepted_segments += f64::from(segments.max(1));
        self.accepted_submits += 1;
    }

    /// The carrier throttled a submit at `now`.
    pub fn throttled(&mut self, now: Instant) {
        self.tick(now);
        self.throttled += 1;
    }

    /// Closes the interval if it is over at `now`, adapting the rate to what happened in
    /// it (the other methods call it first).
    pub fn tick(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed < self.interval {
            return;
        }
        let (accepted, submits, throttled) = (
            self.accepted_segments,
            self.accepted_submits,
            self.throttled,
        );
        let total = submits + throttled;
        if total < MIN_SAMPLE && total > 0 && elapsed < self.interval * STALE_INTERVALS {
            return; // too few answers to judge by: keep counting
        }
        self.window_start = now;
        self.accepted_segments = 0.0;
        self.accepted_submits = 0;
        self.throttled = 0;
        if total < MIN_SAMPLE {
            return; // idle, or a window too sparse to say anything about the rate
        }
        tracing::debug!(
            accepted,
            submits,
            throttled,
            rate = self.rate,
            "throttle control interval"
        );
        let accepted_rate = accepted / elapsed.as_secs_f64();
        // The first judged window measures our own start (binds coming up, work
        // arriving), not the carrier: it only sets the peak.
        let warm = self.recent_accepted > 0.0;
        self.recent_accepted = accepted_rate.max(PEAK_DECAY * self.recent_accepted);
        if !warm {
            return;
        }
        let share = f64::from(throttled) / f64::from(total);
        if throttled == 0 {
            self.pending = None;
            self.unhelpful = 0;
            self.run_before = None;
            self.grow(accepted_rate);
            return;
        }
        let floor = (FLOOR * self.recent_accepted).max(1.0);
        let cut = (self.rate.min(accepted_rate) * CUT)
            .max(floor)
            .min(self.ceiling);
        let can_cut = cut < self.rate;
        if let Some(caused) = self.pending.take() {
            if share < HELPED * caused {
                // It helped: the carrier limits a rate.
                self.unhelpful = 0;
                self.hold = HOLD_MIN;
            } else {
                self.unhelpful += 1;
                if self.unhelpful >= PROBE_CUTS || !can_cut {
                    // Slowing down did not make the carrier throttle less: it throttles
                    // a share whatever the rate. Undo the run of cuts and stop cutting
                    // for a while.
                    self.rate = self.run_before.take().unwrap_or(self.rate);
                    self.unhelpful = 0;
                    self.hold_until = Some(now + self.interval * self.hold);
                    self.hold = (self.hold * 2).min(HOLD_MAX);
                    return;
                }
            }
        }
        if self.hold_until.is_some_and(|t| now < t) {
            return;
        }
        if can_cut {
            self.run_before.get_or_insert(self.rate);
            self.pending = Some(share);
            self.rate = cut;
        }
    }

    fn grow(&mut self, accepted_rate: f64) {
        if self.rate.is_infinite() {
            return;
        }
        self.rate = (self.rate * GROWTH + 1.0).min(self.ceiling);
        if self.ceiling.is_infinite() && self.rate > 2.0 * accepted_rate.max(1.0) {
            self.rate = f64::INFINITY; // the limit no longer binds: unlimited again
        }
    }
}

/// Shared token bucket. Tokens may go negative: a caller that overdraws sleeps until
/// its share is earned, so callers are served in the order they asked. The burst is
/// [`Control::burst`].
#[derive(Debug)]
pub struct RateLimiter {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    control: Control,
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    /// `rate` per second (`None` or 0: unlimited), adapting to throttles every `interval`.
    pub fn new(rate: Option<f64>, interval: Duration) -> Self {
        let rate = rate.filter(|r| *r > 0.0).unwrap_or(f64::INFINITY);
        let now = Instant::now();
        RateLimiter {
            state: Mutex::new(State {
                control: Control::new(rate, interval, now),
                tokens: rate.max(1.0),
                last: now,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until `n` segments may be sent.
    pub async fn acquire(&self, n: u32) {
        let wait = {
            let mut s = self.lock();
            let rate = s.control.rate();
            let now = Instant::now();
            if rate.is_infinite() {
                s.last = now;
                return;
            }
            let burst = s.control.burst();
            let earned = now.duration_since(s.last).as_secs_f64() * rate;
            // Coming from unlimited (tokens infinite) or a higher rate: one burst at most.
            s.tokens = (s.tokens + earned).min(burst);
            s.last = now;
            s.tokens -= f64::from(n);
            if s.tokens >= 0.0 {
                return;
            }
            Duration::from_secs_f64(-s.tokens / rate)
        };
        tokio::time::sleep(wait).await;
    }

    /// The carrier accepted a submit of `segments`.
    pub fn accepted(&self, segments: u32) {
        self.lock().control.accepted(segments, Instant::now());
    }

    /// The carrier throttled a submit.
    pub fn throttled(&self) {
        self.lock().control.throttled(Instant::now());
    }

    /// The rate in force (`INFINITY`: unlimited).
    pub fn rate(&self) -> f64 {
        self.lock().control.rate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL: Duration = Duration::from_millis(500);

    /// Feeds `control` one interval of traffic at `offered` submits per second, of which
    /// the carrier throttles what `throttles` says (given the submit's time and index in
    /// the interval). Returns the accepted submits.
    fn interval(
        c: &mut Control,
        now: &mut Instant,
        offered: f64,
        mut throttles: impl FnMut(Instant, usize) -> bool,
    ) -> usize {
        let sent = (offered.min(c.rate()) * INTERVAL.as_secs_f64()).round() as usize;
        let step = INTERVAL / sent.max(1) as u32;
        let mut accepted = 0;
        let start = *now;
        for i in 0..sent {
            if throttles(*now, i) {
                c.throttled(*now);
            } else {
                c.accepted(1, *now);
                accepted += 1;
            }
            *now += step;
        }
        *now = start + INTERVAL;
        c.tick(*now);
        accepted
    }

    #[test]
    fn given_no_throttling_when_traffic_flows_then_the_limit_never_moves() {
        let mut now = Instant::now();
        let mut c = Control::new(200.0, INTERVAL, now);
        for _ in 0..20 {
            interval(&mut c, &mut now, 1_000.0, |_, _| false);
        }
        assert_eq!(c.rate(), 200.0);
        let mut u = Control::new(f64::INFINITY, INTERVAL, now);
        interval(&mut u, &mut now, 1_000.0, |_, _| false);
        assert!(u.rate().is_infinite());
    }

    #[test]
    fn given_many_throttles_in_one_interval_when_it_closes_then_the_rate_is_cut_once() {
        let mut now = Instant::now();
        let mut c = Control::new(1_000.0, INTERVAL, now);
        // The first interval only measures (our own start).
        interval(&mut c, &mut now, 1_000.0, |_, _| false);
        // 500 accepted and 100 throttled in one interval: one cut, to 90 % of 1,000/s.
        for _ in 0..500 {
            c.accepted(1, now);
        }
        for _ in 0..100 {
            c.throttled(now);
        }
        now += INTERVAL;
        c.tick(now);
        assert!((c.rate() - 900.0).abs() < 1e-6, "{}", c.rate());
    }

    /// A carrier that takes `rate` per second with a burst of one second's worth (a
    /// token bucket, as real ones are) and throttles the rest.
    fn rate_limited(rate: f64, start: Instant) -> impl FnMut(Instant, usize) -> bool {
        let (mut tokens, mut last) = (rate, start);
        move |now, _| {
            tokens = (tokens + now.duration_since(last).as_secs_f64() * rate).min(rate);
            last = now;
            if tokens < 1.0 {
                return true;
            }
            tokens -= 1.0;
            false
        }
    }

    #[test]
    fn given_a_carrier_that_throttles_above_a_rate_when_we_offer_more_then_we_settle_near_it() {
        let mut now = Instant::now();
        let mut carrier = rate_limited(300.0, now);
        let mut c = Control::new(f64::INFINITY, INTERVAL, now);
        let (mut rates, mut accepted) = (Vec::new(), 0);
        for i in 0..40 {
            let a = interval(&mut c, &mut now, 2_000.0, &mut carrier);
            if i >= 4 {
                accepted += a;
            }
            rates.push(c.rate().min(10_000.0));
        }
        // Within two seconds (four intervals) the rate is near the carrier's, and it
        // stays there: between 75 % and 125 % of it (growth steps above it until the
        // carrier's burst runs out), and the carrier takes at least 85 % of what it allows.
        for (i, r) in rates.iter().enumerate().skip(4) {
            assert!((225.0..=375.0).contains(r), "interval {i}: {r} ({rates:?})");
        }
        let per_second = accepted as f64 / (36.0 * INTERVAL.as_secs_f64());
        assert!(per_second >= 0.85 * 300.0, "{per_second}/s accepted");
    }

    #[test]
    fn given_a_carrier_that_throttles_a_share_whatever_the_rate_then_we_mostly_keep_full_speed() {
        // One submit in five throttled, at any rate.
        let share = |_: Instant, i: usize| i % 5 == 4;
        let mut now = Instant::now();
        let mut c = Control::new(f64::INFINITY, INTERVAL, now);
        let offered = 2_000.0;
        let (mut accepted, mut intervals) = (0, 0);
        for _ in 0..200 {
            accepted += interval(&mut c, &mut now, offered, share);
            intervals += 1;
        }
        let unthrottled = offered * INTERVAL.as_secs_f64() * intervals as f64 * 0.8;
        let ratio = accepted as f64 / unthrottled;
        assert!(ratio >= 0.9, "kept {ratio:.2} of the unthrottled rate");
    }

    #[test]
    fn given_a_start_up_trickle_then_a_share_throttling_carrier_still_gets_full_speed() {
        // What a real dispatcher does: its binds come up, a few submits trickle out
        // (one of them throttled), then work flows at full speed.
        let share = |_: Instant, i: usize| i % 5 == 4;
        let mut now = Instant::now();
        let mut c = Control::new(f64::INFINITY, INTERVAL, now);
        interval(&mut c, &mut now, 20.0, share);
        let offered = 2_000.0;
        let mut accepted = 0;
        for _ in 0..100 {
            accepted += interval(&mut c, &mut now, offered, share);
        }
        let unthrottled = offered * INTERVAL.as_secs_f64() * 100.0 * 0.8;
        let ratio = accepted as f64 / unthrottled;
        assert!(ratio >= 0.85, "kept {ratio:.2} of the unthrottled rate");
    }

    #[test]
    fn given_a_cut_when_throttles_stop_then_the_rate_and_the_burst_come_back() {
        let mut now = Instant::now();
        let mut c = Control::new(f64::INFINITY, INTERVAL, now);
        interval(&mut c, &mut now, 1_000.0, |_, _| false);
        // A spell of throttling caps us near 100/s (the floor, half of the recent peak
        // and halving with every interval, stops the first cuts higher)...
        let mut n = 0;
        while c.rate() >= 100.0 {
            interval(&mut c, &mut now, 1_000.0, |_, i| i >= 50);
            n += 1;
            assert!(n < 10, "still at {} after {n} intervals", c.rate());
        }
        // ...then the carrier takes everything again: the limit grows until it no
        // longer binds, and the carrier is unlimited again.
        let mut n = 0;
        while c.rate().is_finite() {
            interval(&mut c, &mut now, 1_000.0, |_, _| false);
            n += 1;
            assert!(n < 40, "still limited at {} after {n} intervals", c.rate());
        }
    }

    #[test]
    fn given_a_low_configured_limit_then_it_is_never_exceeded_when_recovering() {
        let mut now = Instant::now();
        let mut c = Control::new(50.0, INTERVAL, now);
        interval(&mut c, &mut now, 1_000.0, |_, _| false);
        interval(&mut c, &mut now, 1_000.0, |_, i| i >= 10);
        assert!(c.rate() < 50.0);
        for _ in 0..30 {
            interval(&mut c, &mut now, 1_000.0, |_, _| false);
            assert!(c.rate() <= 50.0);
        }
        assert_eq!(c.rate(), 50.0);
    }

    #[test]
    fn given_recent_acceptance_then_a_single_bad_interval_cuts_no_lower_than_half_of_it() {
        let mut now = Instant::now();
        let mut c = Control::new(1_000.0, INTERVAL, now);
        for _ in 0..10 {
            interval(&mut c, &mut now, 1_000.0, |_, _| false);
        }
        // Then an interval in which everything was throttled: the peak of 1,000/s has
        // decayed once, to 500/s, and the floor is half of that.
        interval(&mut c, &mut now, 1_000.0, |_, _| true);
        assert!(
            (c.rate() - 1_000.0 * PEAK_DECAY * FLOOR).abs() < 1e-6,
            "{}",
            c.rate()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn limits_to_the_rate_after_the_burst() {
        let l = RateLimiter::new(Some(10.0), INTERVAL);
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
        let l = RateLimiter::new(Some(10.0), INTERVAL);
        let t0 = Instant::now();
        l.acquire(10).await;
        l.acquire(5).await;
        assert!((t0.elapsed().as_secs_f64() - 0.5).abs() < 0.01);
        let u = RateLimiter::new(None, INTERVAL);
        let t0 = Instant::now();
        for _ in 0..1000 {
            u.acquire(3).await;
        }
        assert_eq!(t0.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn an_unlimited_carrier_that_throttles_is_limited_then_released() {
        let l = RateLimiter::new(None, INTERVAL);
        for _ in 0..100 {
            l.accepted(1);
        }
        tokio::time::advance(INTERVAL).await; // the first interval only measures
        for _ in 0..100 {
            l.accepted(1);
        }
        l.throttled();
        tokio::time::advance(INTERVAL).await;
        l.throttled();
        // 100 accepted in 0.5 s: cut to 90 % of 200/s.
        assert!((l.rate() - 180.0).abs() < 1.0, "{}", l.rate());
        // Sending at the new rate is paced by the bucket: while throttling holds the
        // rate down the burst is one interval's worth (90), and the next 270 take 1.5 s.
        let t0 = Instant::now();
        for _ in 0..360 {
            l.acquire(1).await;
        }
        let took = t0.elapsed().as_secs_f64();
        assert!((1.4..=1.6).contains(&took), "{took}");
    }
}
