//! Carrier scoring: which carrier is most likely to deliver this message well. Pure: the
//! clock is passed in, so every factor is unit-tested.
//!
//! Outcomes are learned per (carrier, route prefix, message type) from the event log:
//! submit accepted / failed, final receipt delivered / not, receipt latency. Every
//! statistic decays with a half-life (`half_life_ms`), towards a prior, so a carrier
//! that degrades loses traffic within minutes and one that got no traffic drifts back to
//! the prior and is tried again. A carrier's score is the weighted mean of its factors
//! in [0, 1] (weights per message type):
//!
//! | factor | value |
//! |---|---|
//! | `success` | decayed delivered / finished, with `prior_weight` pseudo-outcomes at `prior_success` |
//! | `latency` | `latency_target_ms / (latency_target_ms + decayed mean receipt latency)` |
//! | `errors` | 1 − decayed submit errors / submits (with one pseudo-submit without error) |
//! | `load` | 1 − the larger of: routed rate over the last second / `max_tps`, unanswered submits / `window` |
//! | `price` | cheapest candidate's price / this carrier's price |
//! | `health` | 1 when the circuit is closed, 0.5 half-open |
//!
//! Before scoring, hard constraints exclude carriers: already tried, wrong sender type,
//! above the message type's maximum price, circuit open (the carrier reported itself
//! down, or `breaker_errors` submit errors in a row, for `breaker_open_ms`). With
//! probability `exploration` (decided by a hash of the message id, so replays decide the
//! same) the router takes the best-scored carrier other than the top one, so a carrier
//! that recovered earns its traffic back.

use serde::Deserialize;
use smsgw_domain::{RouteAlternative, RouteExplanation, ScoreFactor};
use std::collections::HashMap;

/// Factor weights for one message type.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Weights {
    /// Delivery success rate.
    #[serde(default = "w_success")]
    pub success: f64,
    /// Receipt latency.
    #[serde(default = "w_latency")]
    pub latency: f64,
    /// Submit errors.
    #[serde(default = "w_errors")]
    pub errors: f64,
    /// Load against the throughput limit.
    #[serde(default = "w_load")]
    pub load: f64,
    /// Price per segment.
    #[serde(default = "w_price")]
    pub price: f64,
    /// Circuit-breaker health.
    #[serde(default = "w_health")]
    pub health: f64,
}

fn w_success() -> f64 {
    0.4
}
fn w_latency() -> f64 {
    0.15
}
fn w_errors() -> f64 {
    0.15
}
fn w_load() -> f64 {
    0.1
}
fn w_price() -> f64 {
    0.15
}
fn w_health() -> f64 {
    0.05
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            success: w_success(),
            latency: w_latency(),
            errors: w_errors(),
            load: w_load(),
            price: w_price(),
            health: w_health(),
        }
    }
}

impl Weights {
    fn total(&self) -> f64 {
        self.success + self.latency + self.errors + self.load + self.price + self.health
    }
}

/// Rules for one message type.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TypePolicy {
    /// Factor weights.
    #[serde(default)]
    pub weights: Weights,
    /// Carriers priced above this per segment are not used (unset: no limit).
    #[serde(default)]
    pub max_price: Option<f64>,
    /// Reroute when no final receipt came within this many ms (unset: never, since a
    /// late receipt may still come and the recipient would get the message twice).
    #[serde(default)]
    pub receipt_timeout_ms: Option<i64>,
    /// Hold the message outside quiet hours in the recipient's time zone.
    #[serde(default)]
    pub quiet_hours: bool,
}

/// What the router knows of a carrier besides its outcomes.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CarrierProfile {
    /// Price per segment, in any one currency used for all carriers.
    #[serde(default)]
    pub price_per_segment: f64,
    /// Throughput limit (messages per second) the load factor measures against.
    #[serde(default = "default_tps")]
    pub max_tps: f64,
    /// Submits the carrier takes at once (the dispatcher's `window × binds`); the load
    /// factor also measures routed-but-unanswered messages against it. Unset: ignored.
    #[serde(default)]
    pub window: Option<u32>,
    /// Sender id types it accepts: `numeric`, `alphanumeric`.
    #[serde(default = "default_sender_types")]
    pub sender_types: Vec<String>,
}

fn default_tps() -> f64 {
    100.0
}
fn default_sender_types() -> Vec<String> {
    vec!["numeric".into(), "alphanumeric".into()]
}

impl Default for CarrierProfile {
    fn default() -> Self {
        CarrierProfile {
            price_per_segment: 0.0,
            max_tps: default_tps(),
            window: None,
            sender_types: default_sender_types(),
        }
    }
}

/// Scoring settings (`[scoring]` in the router config).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ScoringConfig {
    /// Half-life of every learned statistic (ms).
    #[serde(default = "default_half_life")]
    pub half_life_ms: i64,
    /// Success rate assumed with no evidence.
    #[serde(default = "default_prior")]
    pub prior_success: f64,
    /// How many outcomes the prior counts as.
    #[serde(default = "default_prior_weight")]
    pub prior_weight: f64,
    /// Receipt latency that scores 0.5 (ms).
    #[serde(default = "default_latency_target")]
    pub latency_target_ms: f64,
    /// Share of decisions that take the runner-up, in [0, 0.5].
    #[serde(default = "default_exploration")]
    pub exploration: f64,
    /// Submit errors in a row that open a carrier's circuit.
    #[serde(default = "default_breaker_errors")]
    pub breaker_errors: u32,
    /// How long an open circuit stays open before a trial (ms).
    #[serde(default = "default_breaker_open")]
    pub breaker_open_ms: i64,
    /// Per message type (`transactional`, `promotional`, `otp`).
    #[serde(default = "default_types")]
    pub types: HashMap<String, TypePolicy>,
    /// Per carrier: price, throughput limit, sender types.
    #[serde(default)]
    pub carriers: HashMap<String, CarrierProfile>,
    /// Attempts (carriers tried) per message at most.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: i32,
    /// Where learned statistics are kept besides memory.
    #[serde(default)]
    pub store: crate::store::StoreConfig,
    /// Quiet hours, local time in the recipient's zone: from this hour...
    #[serde(default = "default_quiet_start")]
    pub quiet_start_hour: u32,
    /// ...to this hour.
    #[serde(default = "default_quiet_end")]
    pub quiet_end_hour: u32,
}

fn default_max_attempts() -> i32 {
    3
}
fn default_half_life() -> i64 {
    300_000
}
fn default_prior() -> f64 {
    0.9
}
fn default_prior_weight() -> f64 {
    5.0
}
fn default_latency_target() -> f64 {
    10_000.0
}
fn default_exploration() -> f64 {
    0.03
}
fn default_breaker_errors() -> u32 {
    5
}
fn default_breaker_open() -> i64 {
    30_000
}
fn default_quiet_start() -> u32 {
    21
}
fn default_quiet_end() -> u32 {
    8
}
fn default_types() -> HashMap<String, TypePolicy> {
    let mut t = HashMap::new();
    t.insert("transactional".into(), TypePolicy::default());
    t.insert(
        "otp".into(),
        TypePolicy {
            weights: Weights {
                latency: 0.35,
                price: 0.05,
                ..Weights::default()
            },
            ..TypePolicy::default()
        },
    );
    t.insert(
        "promotional".into(),
        TypePolicy {
            weights: Weights {
                price: 0.35,
                latency: 0.05,
                ..Weights::default()
            },
            quiet_hours: true,
            ..TypePolicy::default()
        },
    );
    t
}

impl Default for ScoringConfig {
    fn default() -> Self {
        ScoringConfig {
            half_life_ms: default_half_life(),
            prior_success: default_prior(),
            prior_weight: default_prior_weight(),
            latency_target_ms: default_latency_target(),
            exploration: default_exploration(),
            breaker_errors: default_breaker_errors(),
            breaker_open_ms: default_breaker_open(),
            types: default_types(),
            carriers: HashMap::new(),
            quiet_start_hour: default_quiet_start(),
            quiet_end_hour: default_quiet_end(),
            max_attempts: default_max_attempts(),
            store: Default::default(),
        }
    }
}

impl ScoringConfig {
    /// Fails fast on values that cannot work.
    pub fn validate(&self) -> Result<(), String> {
        if self.half_life_ms <= 0 || self.breaker_open_ms <= 0 || self.latency_target_ms <= 0.0 {
            return Err(
                "scoring half_life_ms, breaker_open_ms and latency_target_ms must be positive"
                    .into(),
            );
        }
        if !(0.0..=1.0).contains(&self.prior_success) || self.prior_weight <= 0.0 {
            return Err("scoring prior_success must be in [0, 1] and prior_weight positive".into());
        }
        if !(0.0..=0.5).contains(&self.exploration) {
            return Err("scoring exploration must be in [0, 0.5]".into());
        }
        self.store.validate()?;
        if self.max_attempts < 1 {
            return Err("scoring max_attempts must be at least 1".into());
        }
        if self.quiet_start_hour > 23 || self.quiet_end_hour > 23 {
            return Err("quiet hours are 0-23".into());
        }
        for (t, p) in &self.types {
            if !["transactional", "promotional", "otp"].contains(&t.as_str()) {
                return Err(format!(
                    "scoring type {t:?} must be transactional, promotional or otp"
                ));
            }
            let w = &p.weights;
            let all = [w.success, w.latency, w.errors, w.load, w.price, w.health];
            if all.iter().any(|x| *x < 0.0) || w.total() <= 0.0 {
                return Err(format!(
                    "scoring weights of {t} must be >= 0 with a positive sum"
                ));
            }
        }
        for (c, p) in &self.carriers {
            if p.max_tps <= 0.0 || p.price_per_segment < 0.0 {
                return Err(format!("carrier {c}: max_tps must be positive, price >= 0"));
            }
            if p.sender_types
                .iter()
                .any(|t| t != "numeric" && t != "alphanumeric")
            {
                return Err(format!(
                    "carrier {c}: sender_types are numeric and alphanumeric"
                ));
            }
        }
        Ok(())
    }

    /// The policy of a message type (unknown and unset: transactional, else defaults).
    pub fn policy(&self, message_type: Option<&str>) -> TypePolicy {
        let t = message_type.unwrap_or("transactional");
        self.types
            .get(t)
            .or_else(|| self.types.get("transactional"))
            .cloned()
            .unwrap_or_default()
    }
}

/// A count that halves every half-life.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Decayed {
    value: f64,
    at: i64,
}

impl Decayed {
    fn get(&self, now: i64, half_life: i64) -> f64 {
        let dt = (now - self.at).max(0) as f64;
        self.value * 0.5f64.powf(dt / half_life as f64)
    }
    fn add(&mut self, x: f64, now: i64, half_life: i64) {
        self.value = self.get(now, half_life) + x;
        self.at = now.max(self.at);
    }
}

/// Outcomes of one (carrier, prefix, message type).
#[derive(Debug, Clone, Default)]
struct Stats {
    delivered: Decayed,
    finished: Decayed,
    latency_sum: Decayed,
    latency_n: Decayed,
    submits: Decayed,
    errors: Decayed,
}

impl Stats {
    /// Adds `other`'s counts, each decayed to `now`.
    fn merge(&mut self, other: &Stats, now: i64, hl: i64) {
        for (d, o) in [
            (&mut self.delivered, &other.delivered),
            (&mut self.finished, &other.finished),
            (&mut self.latency_sum, &other.latency_sum),
            (&mut self.latency_n, &other.latency_n),
            (&mut self.submits, &other.submits),
            (&mut self.errors, &other.errors),
        ] {
            d.add(o.get(now, hl), now, hl);
        }
    }
}

/// Per-carrier health and load.
#[derive(Debug, Clone, Default)]
struct Health {
    errors_in_a_row: u32,
    open_until: i64,
    half_open: bool,
    down: bool,
    routed: Decayed,
    /// Routed and not yet answered (submitted or failed).
    in_flight: u32,
}

/// A carrier the message may go to, for [`Scorer::choose`].
#[derive(Debug, Clone)]
pub struct Candidate<'a> {
    /// Carrier.
    pub carrier: &'a str,
    /// Why it may not be used, if a route-level constraint already excluded it.
    pub excluded: Option<&'static str>,
}

/// A routing decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    /// The carrier.
    pub carrier: String,
    /// Why, for the `CarrierSelected` event.
    pub explain: RouteExplanation,
}

/// One router's decayed statistics for one (carrier, prefix, message type), as stored
/// in the score store (`schemas/cql/carrier_scores.cql`).
#[derive(Debug, Clone, PartialEq)]
pub struct StatsRow {
    /// Carrier.
    pub carrier: String,
    /// Route prefix.
    pub prefix: String,
    /// Message type.
    pub message_type: String,
    /// The router instance that learned it.
    pub writer: String,
    /// Delivered outcomes (decayed).
    pub delivered: f64,
    /// Finished outcomes (decayed).
    pub finished: f64,
    /// Sum of receipt latencies, ms (decayed).
    pub latency_sum: f64,
    /// Latencies summed (decayed).
    pub latency_n: f64,
    /// Submits (decayed).
    pub submits: f64,
    /// Submit errors (decayed).
    pub errors: f64,
    /// When the values were taken (Unix ms).
    pub as_of: i64,
}

/// What the router learned, and how it scores.
#[derive(Debug, Clone, Default)]
pub struct Scorer {
    config: ScoringConfig,
    stats: HashMap<(String, String, String), Stats>,
    /// What other routers learned (from the score store), summed.
    remote: HashMap<(String, String, String), Stats>,
    health: HashMap<String, Health>,
}

fn key(carrier: &str, prefix: &str, t: Option<&str>) -> (String, String, String) {
    (
        carrier.to_string(),
        prefix.to_string(),
        t.unwrap_or("transactional").to_string(),
    )
}

/// Whether a sender id is numeric (digits, optionally with `+`) or alphanumeric.
pub fn sender_type(sender: &str) -> &'static str {
    let digits = sender.strip_prefix('+').unwrap_or(sender);
    if !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit()) {
        "numeric"
    } else {
        "alphanumeric"
    }
}

impl Scorer {
    /// A scorer with no evidence yet.
    pub fn new(config: ScoringConfig) -> Self {
        Scorer {
            config,
            ..Scorer::default()
        }
    }

    /// A copy that ignores circuit breakers and reported outages (for queueing on a
    /// carrier that is down when every carrier is).
    pub fn ignoring_circuits(&self) -> Scorer {
        Scorer {
            config: self.config.clone(),
            stats: self.stats.clone(),
            remote: self.remote.clone(),
            health: HashMap::new(),
        }
    }

    /// This router's statistics as rows for the score store, decayed to `now`.
    pub fn export(&self, writer: &str, now: i64) -> Vec<StatsRow> {
        let hl = self.config.half_life_ms;
        let mut rows: Vec<StatsRow> = self
            .stats
            .iter()
            .map(|((carrier, prefix, t), s)| StatsRow {
                carrier: carrier.clone(),
                prefix: prefix.clone(),
                message_type: t.clone(),
                writer: writer.to_string(),
                delivered: s.delivered.get(now, hl),
                finished: s.finished.get(now, hl),
                latency_sum: s.latency_sum.get(now, hl),
                latency_n: s.latency_n.get(now, hl),
                submits: s.submits.get(now, hl),
                errors: s.errors.get(now, hl),
                as_of: now,
            })
            .collect();
        rows.sort_by(|a, b| {
            (&a.carrier, &a.prefix, &a.message_type).cmp(&(&b.carrier, &b.prefix, &b.message_type))
        });
        rows
    }

    /// Takes the store's rows: other writers' rows become the remote evidence (replacing
    /// the previous copy); this writer's own rows seed keys it has not learned since it
    /// started (a restart keeps what was learned before it).
    pub fn absorb(&mut self, rows: &[StatsRow], writer: &str, now: i64) {
        let hl = self.config.half_life_ms;
        let mut remote: HashMap<(String, String, String), Stats> = HashMap::new();
        for r in rows {
            let k = (r.carrier.clone(), r.prefix.clone(), r.message_type.clone());
            let target = if r.writer == writer {
                if self.stats.contains_key(&k) {
                    continue;
                }
                self.stats.entry(k).or_default()
            } else {
                remote.entry(k).or_default()
            };
            // The row decays from its own time.
            let at = |value| Decayed { value, at: r.as_of };
            let row = Stats {
                delivered: at(r.delivered),
                finished: at(r.finished),
                latency_sum: at(r.latency_sum),
                latency_n: at(r.latency_n),
                submits: at(r.submits),
                errors: at(r.errors),
            };
            target.merge(&row, now, hl);
        }
        self.remote = remote;
    }

    /// The settings.
    pub fn config(&self) -> &ScoringConfig {
        &self.config
    }

    fn stats(&mut self, carrier: &str, prefix: &str, t: Option<&str>) -> &mut Stats {
        self.stats.entry(key(carrier, prefix, t)).or_default()
    }

    fn health(&mut self, carrier: &str) -> &mut Health {
        self.health.entry(carrier.to_string()).or_default()
    }

    /// A carrier was chosen (load).
    pub fn on_routed(&mut self, carrier: &str, now: i64) {
        let h = self.health(carrier);
        h.routed.add(1.0, now, 1_000);
        h.in_flight += 1;
    }

    /// `submit_sm` was accepted.
    pub fn on_submitted(&mut self, carrier: &str, prefix: &str, t: Option<&str>, now: i64) {
        let hl = self.config.half_life_ms;
        self.stats(carrier, prefix, t).submits.add(1.0, now, hl);
        let h = self.health(carrier);
        h.in_flight = h.in_flight.saturating_sub(1);
        h.errors_in_a_row = 0;
        h.half_open = false;
    }

    /// `submit_sm` failed (or the link broke).
    pub fn on_submit_error(&mut self, carrier: &str, prefix: &str, t: Option<&str>, now: i64) {
        let hl = self.config.half_life_ms;
        let s = self.stats(carrier, prefix, t);
        s.submits.add(1.0, now, hl);
        s.errors.add(1.0, now, hl);
        let (limit, open_ms) = (self.config.breaker_errors, self.config.breaker_open_ms);
        let h = self.health(carrier);
        h.in_flight = h.in_flight.saturating_sub(1);
        h.errors_in_a_row += 1;
        if h.errors_in_a_row >= limit || h.half_open {
            h.open_until = now + open_ms;
            h.half_open = true;
            h.errors_in_a_row = 0;
        }
    }

    /// A final receipt (or its absence) settled a submitted message.
    pub fn on_final(
        &mut self,
        carrier: &str,
        prefix: &str,
        t: Option<&str>,
        delivered: bool,
        latency_ms: Option<i64>,
        now: i64,
    ) {
        let hl = self.config.half_life_ms;
        let s = self.stats(carrier, prefix, t);
        s.finished.add(1.0, now, hl);
        if delivered {
            s.delivered.add(1.0, now, hl);
        }
        if let Some(l) = latency_ms {
            s.latency_sum.add(l.max(0) as f64, now, hl);
            s.latency_n.add(1.0, now, hl);
        }
    }

    /// The carrier reported its link up or down.
    pub fn set_down(&mut self, carrier: &str, down: bool) {
        self.health(carrier).down = down;
    }

    /// Why a carrier cannot be used now, from its health alone.
    pub fn circuit_open(&self, carrier: &str, now: i64) -> bool {
        self.health
            .get(carrier)
            .is_some_and(|h| h.down || h.open_until > now)
    }

    /// The factors of a carrier's score for a message.
    pub fn factors(
        &self,
        carrier: &str,
        prefix: &str,
        t: Option<&str>,
        cheapest: f64,
        now: i64,
    ) -> Vec<ScoreFactor> {
        let c = &self.config;
        let hl = c.half_life_ms;
        let w = c.policy(t).weights;
        let k = key(carrier, prefix, t);
        let mut s = self.stats.get(&k).cloned().unwrap_or_default();
        if let Some(r) = self.remote.get(&k) {
            s.merge(r, now, hl);
        }
        let h = self.health.get(carrier).cloned().unwrap_or_default();
        let profile = c.carriers.get(carrier).cloned().unwrap_or_default();
        let success = (s.delivered.get(now, hl) + c.prior_success * c.prior_weight)
            / (s.finished.get(now, hl) + c.prior_weight);
        let n = s.latency_n.get(now, hl);
        let latency = if n > 1e-9 {
            c.latency_target_ms / (c.latency_target_ms + s.latency_sum.get(now, hl) / n)
        } else {
            1.0
        };
        let errors = 1.0 - s.errors.get(now, hl) / (s.submits.get(now, hl) + 1.0);
        let rate = h.routed.get(now, 1_000) / profile.max_tps;
        let window = profile
            .window
            .map_or(0.0, |w| f64::from(h.in_flight) / f64::from(w.max(1)));
        let load = 1.0 - rate.max(window).min(1.0);
        let price = if profile.price_per_segment > 0.0 {
            (cheapest / profile.price_per_segment).min(1.0)
        } else {
            1.0
        };
        let health = if h.half_open { 0.5 } else { 1.0 };
        [
            ("success", success, w.success),
            ("latency", latency, w.latency),
            ("errors", errors, w.errors),
            ("load", load, w.load),
            ("price", price, w.price),
            ("health", health, w.health),
        ]
        .into_iter()
        .map(|(name, value, weight)| ScoreFactor {
            name: name.into(),
            value: value.clamp(0.0, 1.0),
            weight,
        })
        .collect()
    }

    /// Picks the carrier for a message among `candidates` (in route order), or `None`
    /// when every one is excluded. `explore` in [0, 1) decides exploration.
    pub fn choose(
        &self,
        candidates: &[Candidate<'_>],
        prefix: &str,
        sender: &str,
        t: Option<&str>,
        explore: f64,
        now: i64,
    ) -> Option<Choice> {
        let policy = self.config.policy(t);
        let stype = sender_type(sender);
        let price = |c: &str| {
            self.config
                .carriers
                .get(c)
                .map_or(0.0, |p| p.price_per_segment)
        };
        let mut alternatives = Vec::new();
        let mut feasible = Vec::new();
        for c in candidates {
            let profile = self
                .config
                .carriers
                .get(c.carrier)
                .cloned()
                .unwrap_or_default();
            let excluded = c.excluded.or_else(|| {
                if !profile.sender_types.iter().any(|s| s == stype) {
                    Some("sender_type")
                } else if policy.max_price.is_some_and(|m| price(c.carrier) > m) {
                    Some("price")
                } else if self.circuit_open(c.carrier, now) {
                    Some("circuit_open")
                } else {
                    None
                }
            });
            match excluded {
                Some(why) => alternatives.push(RouteAlternative {
                    carrier: c.carrier.to_string(),
                    score: None,
                    excluded: Some(why.to_string()),
                }),
                None => feasible.push(c.carrier),
            }
        }
        let cheapest = feasible
            .iter()
            .map(|c| price(c))
            .filter(|p| *p > 0.0)
            .fold(f64::INFINITY, f64::min);
        let total = policy.weights.total();
        let mut scored: Vec<(f64, &str, Vec<ScoreFactor>)> = feasible
            .iter()
            .map(|c| {
                let f = self.factors(c, prefix, t, cheapest, now);
                let score = f.iter().map(|x| x.value * x.weight).sum::<f64>() / total;
                (score, *c, f)
            })
            .collect();
        // Best first; ties keep route order (stable sort).
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        if scored.is_empty() {
            return None;
        }
        let pick = if scored.len() > 1 && explore < self.config.exploration {
            1
        } else {
            0
        };
        let (score, carrier, factors) = scored.remove(pick);
        for (s, c, _) in &scored {
            alternatives.push(RouteAlternative {
                carrier: c.to_string(),
                score: Some(*s),
                excluded: None,
            });
        }
        Some(Choice {
            carrier: carrier.to_string(),
            explain: RouteExplanation {
                score: Some(score),
                factors,
                alternatives,
            },
        })
    }
}

/// A number in [0, 1) from a message id and attempt: the exploration draw, the same on
/// every replay.
pub fn draw(message_id: &str, attempt: i32) -> f64 {
    // FNV-1a, then the top 53 bits as a fraction.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in message_id.bytes().chain(attempt.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests;
