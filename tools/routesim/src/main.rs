//! Routing simulation: smsgw's carrier scoring (the router's own `Scorer`, unchanged)
//! against an oracle that always knows the truly best carrier, and against round-robin.
//!
//! A world of carriers × countries in simulated time: every (carrier, country) has a
//! true delivery rate and receipt latency that drift; some carriers fail outright for a
//! while (every submit errors); one good carrier degrades at a known time. Messages
//! arrive at a fixed rate; each strategy gets up to `MAX_ATTEMPTS` tries per message
//! (a submit error or a failure receipt moves on to another carrier), and learns only
//! from what it observes, when it would observe it (receipts arrive after their
//! latency). Output: delivered ratio, cost, and how long the scorer took to move
//! traffic off the degraded carrier. Deterministic for a seed.
//!
//! `smsgw-routesim [--seed N] [--hours H] [--rate MSG_PER_S] [--json FILE]`

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use smsgw_router::scoring::{draw, Candidate, CarrierProfile, Scorer, ScoringConfig};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

const CARRIERS: usize = 6;
const COUNTRIES: usize = 24;
const MAX_ATTEMPTS: usize = 3;

/// The true, hidden state of the world.
struct World {
    /// Base delivery rate per (carrier, country).
    base: Vec<Vec<f64>>,
    /// Drift phase and amplitude per (carrier, country).
    drift: Vec<Vec<(f64, f64)>>,
    /// Base receipt latency (ms) per (carrier, country).
    latency: Vec<Vec<f64>>,
    /// Which carriers serve which countries.
    serves: Vec<Vec<bool>>,
    /// Price per segment by carrier.
    price: Vec<f64>,
    /// Outages: (carrier, from ms, to ms).
    outages: Vec<(usize, i64, i64)>,
    /// The degradation whose reaction time is measured: (carrier, at ms, new rate).
    degrade: (usize, i64, f64),
}

impl World {
    fn new(rng: &mut StdRng, hours: f64) -> World {
        let span = (hours * 3_600_000.0) as i64;
        let mut base = vec![vec![0.0f64; COUNTRIES]; CARRIERS];
        let mut drift = vec![vec![(0.0, 0.0); COUNTRIES]; CARRIERS];
        let mut latency = vec![vec![0.0; COUNTRIES]; CARRIERS];
        let mut serves = vec![vec![false; COUNTRIES]; CARRIERS];
        for c in 0..CARRIERS {
            for k in 0..COUNTRIES {
                base[c][k] = rng.random_range(0.70..0.97);
                drift[c][k] = (
                    rng.random_range(0.0..std::f64::consts::TAU),
                    rng.random_range(0.0..0.08),
                );
                latency[c][k] = rng.random_range(800.0..20_000.0);
                serves[c][k] = rng.random_bool(0.7);
            }
        }
        // Every country has at least three carriers.
        for k in 0..COUNTRIES {
            let mut c = k % CARRIERS;
            while serves.iter().filter(|s| s[k]).count() < 3 {
                serves[c][k] = true;
                c = (c + 1) % CARRIERS;
            }
        }
        let price = (0..CARRIERS)
            .map(|_| rng.random_range(0.004..0.012))
            .collect();
        // Carrier 1 is down for 10 minutes at 30% of the run; carrier 3 for 20 at 60%.
        let outages = vec![
            (1, span * 3 / 10, span * 3 / 10 + 600_000),
            (3, span * 6 / 10, span * 6 / 10 + 1_200_000),
        ];
        // The degraded carrier: the one that is best in the most countries at t = 0.
        let mut wins = [0usize; CARRIERS];
        for k in 0..COUNTRIES {
            let best = (0..CARRIERS)
                .filter(|c| serves[*c][k])
                .max_by(|a, b| base[*a][k].total_cmp(&base[*b][k]))
                .expect("served");
            wins[best] += 1;
        }
        let victim = (0..CARRIERS).max_by_key(|c| wins[*c]).expect("carriers");
        for k in 0..COUNTRIES {
            if serves[victim][k] {
                base[victim][k] = base[victim][k].max(0.93);
            }
        }
        World {
            base,
            drift,
            latency,
            serves,
            price,
            outages,
            degrade: (victim, span * 45 / 100, 0.45),
        }
    }

    fn down(&self, c: usize, t: i64) -> bool {
        self.outages
            .iter()
            .any(|(oc, from, to)| *oc == c && (*from..*to).contains(&t))
    }

    /// The true delivery rate now.
    fn rate(&self, c: usize, k: usize, t: i64) -> f64 {
        if self.degrade.0 == c && t >= self.degrade.1 {
            return self.degrade.2;
        }
        let (phase, amp) = self.drift[c][k];
        let hours = t as f64 / 3_600_000.0;
        (self.base[c][k] + amp * (hours * 1.3 + phase).sin()).clamp(0.0, 1.0)
    }

    fn carriers_of(&self, k: usize) -> Vec<usize> {
        (0..CARRIERS).filter(|c| self.serves[*c][k]).collect()
    }
}

fn name(c: usize) -> String {
    format!("c{c}")
}

fn prefix(k: usize) -> String {
    format!("+{}", 200 + k)
}

/// What a strategy saw of one message, delivered later to it.
enum Feedback {
    Final {
        carrier: usize,
        country: usize,
        delivered: bool,
        latency: i64,
    },
}

#[derive(Default, Debug, Clone)]
struct Totals {
    messages: u64,
    delivered: u64,
    /// Delivered by the first carrier tried (no second text, no extra latency).
    first: u64,
    attempts: u64,
    cost: f64,
}

/// Width of the buckets the degraded carrier's share is measured in (ms).
const BUCKET_MS: i64 = 10_000;

trait Strategy {
    /// The carrier for this attempt, among `carriers` not in `tried`.
    fn pick(
        &mut self,
        w: &World,
        k: usize,
        tried: &[usize],
        id: u64,
        attempt: usize,
        t: i64,
    ) -> Option<usize>;
    fn submitted(&mut self, _c: usize, _k: usize, _ok: bool, _t: i64) {}
    fn learn(&mut self, _f: &Feedback, _t: i64) {}
}

struct Oracle;
impl Strategy for Oracle {
    fn pick(
        &mut self,
        w: &World,
        k: usize,
        tried: &[usize],
        _: u64,
        _: usize,
        t: i64,
    ) -> Option<usize> {
        w.carriers_of(k)
            .into_iter()
            .filter(|c| !tried.contains(c) && !w.down(*c, t))
            .max_by(|a, b| {
                w.rate(*a, k, t)
                    .total_cmp(&w.rate(*b, k, t))
                    .then(w.price[*b].total_cmp(&w.price[*a]))
            })
    }
}

#[derive(Default)]
struct RoundRobin {
    next: HashMap<usize, usize>,
}
impl Strategy for RoundRobin {
    fn pick(
        &mut self,
        w: &World,
        k: usize,
        tried: &[usize],
        _: u64,
        _: usize,
        _: i64,
    ) -> Option<usize> {
        let cs = w.carriers_of(k);
        let i = self.next.entry(k).or_default();
        for _ in 0..cs.len() {
            let c = cs[*i % cs.len()];
            *i += 1;
            if !tried.contains(&c) {
                return Some(c);
            }
        }
        None
    }
}

struct Scored {
    scorer: Scorer,
    names: Vec<String>,
    /// First attempts in the degraded carrier's countries per bucket: (its picks, all).
    victim_share: HashMap<i64, (u32, u32)>,
    victim: usize,
}
impl Strategy for Scored {
    fn pick(
        &mut self,
        w: &World,
        k: usize,
        tried: &[usize],
        id: u64,
        attempt: usize,
        t: i64,
    ) -> Option<usize> {
        let cs = w.carriers_of(k);
        let cands: Vec<Candidate<'_>> = cs
            .iter()
            .map(|c| Candidate {
                carrier: &self.names[*c],
                excluded: tried.contains(c).then_some("tried"),
            })
            .collect();
        let choice = self.scorer.choose(
            &cands,
            &prefix(k),
            "SHOP",
            None,
            draw(&id.to_string(), attempt as i32),
            t,
        )?;
        let c = self.names.iter().position(|n| *n == choice.carrier)?;
        self.scorer.on_routed(&choice.carrier, t);
        if attempt == 1 && w.serves[self.victim][k] {
            let e = self.victim_share.entry(t / BUCKET_MS).or_default();
            e.1 += 1;
            if c == self.victim {
                e.0 += 1;
            }
        }
        Some(c)
    }
    fn submitted(&mut self, c: usize, k: usize, ok: bool, t: i64) {
        if ok {
            self.scorer
                .on_submitted(&self.names[c], &prefix(k), None, t);
        } else {
            self.scorer
                .on_submit_error(&self.names[c], &prefix(k), None, t);
        }
    }
    fn learn(&mut self, f: &Feedback, t: i64) {
        let Feedback::Final {
            carrier,
            country,
            delivered,
            latency,
        } = f;
        self.scorer.on_final(
            &self.names[*carrier],
            &prefix(*country),
            None,
            *delivered,
            Some(*latency),
            t,
        );
    }
}

/// Runs one strategy over the same message stream; returns its totals.
fn run(w: &World, s: &mut dyn Strategy, seed: u64, hours: f64, rate: f64) -> Totals {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    let span = (hours * 3_600_000.0) as i64;
    let step = (1000.0 / rate) as i64;
    let mut pending: BinaryHeap<Reverse<(i64, u64)>> = BinaryHeap::new();
    let mut feedback: HashMap<u64, Feedback> = HashMap::new();
    let mut seq = 0u64;
    let mut totals = Totals::default();
    let mut t = 0;
    let mut id = 0u64;
    while t < span {
        while let Some(Reverse((at, n))) = pending.peek().copied() {
            if at > t {
                break;
            }
            pending.pop();
            if let Some(f) = feedback.remove(&n) {
                s.learn(&f, at);
            }
        }
        id += 1;
        let k = rng.random_range(0..COUNTRIES);
        totals.messages += 1;
        let mut tried = Vec::new();
        let mut now = t;
        for attempt in 1..=MAX_ATTEMPTS {
            let Some(c) = s.pick(w, k, &tried, id, attempt, now) else {
                break;
            };
            tried.push(c);
            totals.attempts += 1;
            if w.down(c, now) {
                s.submitted(c, k, false, now);
                continue; // submit error: next carrier at once
            }
            s.submitted(c, k, true, now);
            totals.cost += w.price[c];
            let delivered = rng.random_bool(w.rate(c, k, now));
            let latency = (w.latency[c][k] * rng.random_range(0.5..1.5)) as i64;
            seq += 1;
            feedback.insert(
                seq,
                Feedback::Final {
                    carrier: c,
                    country: k,
                    delivered,
                    latency,
                },
            );
            pending.push(Reverse((now + latency, seq)));
            if delivered {
                totals.delivered += 1;
                if attempt == 1 {
                    totals.first += 1;
                }
                break;
            }
            now += latency; // the failure receipt moves it on
        }
        t += step;
    }
    totals
}

fn arg(args: &[String], flag: &str) -> Option<String> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let seed: u64 = arg(&args, "--seed").map_or(Ok(7), |s| s.parse())?;
    let hours: f64 = arg(&args, "--hours").map_or(Ok(2.0), |s| s.parse())?;
    let rate: f64 = arg(&args, "--rate").map_or(Ok(50.0), |s| s.parse())?;
    let mut rng = StdRng::seed_from_u64(seed);
    let w = World::new(&mut rng, hours);
    let mut config = ScoringConfig::default();
    for c in 0..CARRIERS {
        config.carriers.insert(
            name(c),
            CarrierProfile {
                price_per_segment: w.price[c],
                max_tps: rate,
                ..CarrierProfile::default()
            },
        );
    }
    let mut scored = Scored {
        scorer: Scorer::new(config),
        names: (0..CARRIERS).map(name).collect(),
        victim_share: HashMap::new(),
        victim: w.degrade.0,
    };
    let results = [
        ("oracle", run(&w, &mut Oracle, seed, hours, rate)),
        ("smsgw", run(&w, &mut scored, seed, hours, rate)),
        (
            "round-robin",
            run(&w, &mut RoundRobin::default(), seed, hours, rate),
        ),
    ];
    println!(
        "routing simulation: {CARRIERS} carriers x {COUNTRIES} countries, {hours} h at {rate} msg/s, seed {seed}, up to {MAX_ATTEMPTS} attempts"
    );
    println!(
        "  outages: {}; degradation: c{} to {:.0}% at minute {}",
        w.outages
            .iter()
            .map(|(c, a, b)| format!("c{c} minutes {}-{}", a / 60_000, b / 60_000))
            .collect::<Vec<_>>()
            .join(", "),
        w.degrade.0,
        w.degrade.2 * 100.0,
        w.degrade.1 / 60_000
    );
    println!(
        "{:<12} {:>9} {:>10} {:>10} {:>14} {:>12} {:>14}",
        "strategy",
        "messages",
        "delivered",
        "ratio",
        "first-attempt",
        "attempts/msg",
        "cost/delivered"
    );
    let oracle_ratio = results[0].1.delivered as f64 / results[0].1.messages as f64;
    let mut json = serde_json::Map::new();
    for (n, r) in &results {
        let ratio = r.delivered as f64 / r.messages as f64;
        let first = r.first as f64 / r.messages as f64;
        println!(
            "{:<12} {:>9} {:>10} {:>9.2}% {:>13.2}% {:>12.3} {:>14.5}",
            n,
            r.messages,
            r.delivered,
            ratio * 100.0,
            first * 100.0,
            r.attempts as f64 / r.messages as f64,
            r.cost / r.delivered as f64
        );
        json.insert(
            n.to_string(),
            serde_json::json!({"messages": r.messages, "delivered": r.delivered, "ratio": ratio,
                "first_attempt_ratio": first,
                "attempts_per_message": r.attempts as f64 / r.messages as f64,
                "cost_per_delivered": r.cost / r.delivered as f64}),
        );
    }
    // How fast the scorer moved first attempts off the degraded carrier.
    let at = w.degrade.1 / BUCKET_MS;
    let share = |b: i64| {
        scored
            .victim_share
            .get(&b)
            .map_or(0.0, |(v, all)| f64::from(*v) / f64::from((*all).max(1)))
    };
    let window = 60; // buckets before the degradation to average over
    let before: f64 = (at - window..at).map(share).sum::<f64>() / window as f64;
    // Smoothed over 30 s; shifted once it stays at or below half for two minutes.
    let smooth = |b: i64| (share(b - 2) + share(b - 1) + share(b)) / 3.0;
    let shifted = (at..at + 720)
        .find(|b| (*b..*b + 12).all(|x| smooth(x) <= before / 2.0))
        .map(|b| (b - at + 1) * BUCKET_MS / 1000);
    let smsgw_ratio = results[1].1.delivered as f64 / results[1].1.messages as f64;
    println!(
        "smsgw vs oracle: {:.2} points of delivered ratio; c{}'s share of first attempts in its countries: {:.0}% before it degraded, at most half of that (30 s average, for 2 min) from {} after",
        (oracle_ratio - smsgw_ratio) * 100.0,
        w.degrade.0,
        before * 100.0,
        shifted.map_or("not within 2 h".to_string(), |s| format!("{s} s"))
    );
    for b in (at - 3..at + 30).step_by(3) {
        println!(
            "  t {:>+5} s: c{} share {:>5.1}% (30 s average)",
            (b - at) * BUCKET_MS / 1000,
            w.degrade.0,
            smooth(b) * 100.0
        );
    }
    json.insert("shift_seconds".into(), serde_json::json!(shifted));
    json.insert("victim_share_before".into(), serde_json::json!(before));
    if let Some(path) = arg(&args, "--json") {
        std::fs::write(&path, serde_json::to_string_pretty(&json)?)?;
        println!("wrote {path}");
    }
    Ok(())
}
