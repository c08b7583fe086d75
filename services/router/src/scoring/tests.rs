//! Given some evidence, when the router chooses, then the factor at stake decides.

use super::*;

const T0: i64 = 1_000_000_000;
const MIN: i64 = 60_000;

fn scorer(carriers: &[(&str, f64, &[&str])]) -> Scorer {
    let mut c = ScoringConfig {
        exploration: 0.0,
        ..ScoringConfig::default()
    };
    for (name, price, types) in carriers {
        c.carriers.insert(
            name.to_string(),
            CarrierProfile {
                price_per_segment: *price,
                max_tps: 10.0,
                window: None,
                sender_types: types.iter().map(|s| s.to_string()).collect(),
            },
        );
    }
    Scorer::new(c)
}

const BOTH: &[&str] = &["numeric", "alphanumeric"];

fn cands<'a>(names: &[&'a str]) -> Vec<Candidate<'a>> {
    names
        .iter()
        .map(|c| Candidate {
            carrier: c,
            excluded: None,
        })
        .collect()
}

fn pick(s: &Scorer, names: &[&str], t: Option<&str>, now: i64) -> Option<String> {
    s.choose(&cands(names), "+44", "SHOP", t, 0.99, now)
        .map(|c| c.carrier)
}

fn factor(s: &Scorer, carrier: &str, name: &str, now: i64) -> f64 {
    s.factors(carrier, "+44", None, 1.0, now)
        .into_iter()
        .find(|f| f.name == name)
        .unwrap()
        .value
}

#[test]
fn with_no_evidence_route_order_breaks_the_tie() {
    let s = scorer(&[("a", 1.0, BOTH), ("b", 1.0, BOTH)]);
    assert_eq!(pick(&s, &["a", "b"], None, T0).as_deref(), Some("a"));
    assert_eq!(pick(&s, &["b", "a"], None, T0).as_deref(), Some("b"));
}

#[test]
fn success_rate_moves_traffic_and_decays_back_to_the_prior() {
    let mut s = scorer(&[("a", 1.0, BOTH), ("b", 1.0, BOTH)]);
    for _ in 0..50 {
        s.on_final("a", "+44", None, false, Some(1_000), T0);
        s.on_final("b", "+44", None, true, Some(1_000), T0);
    }
    assert!(factor(&s, "a", "success", T0) < 0.2);
    assert!(factor(&s, "b", "success", T0) > 0.95);
    assert_eq!(pick(&s, &["a", "b"], None, T0).as_deref(), Some("b"));
    // An hour later (12 half-lives) the evidence is gone: both are back at the prior,
    // so a gets its share of traffic again (exploration and ties do the rest).
    let later = T0 + 60 * MIN;
    assert!((factor(&s, "a", "success", later) - 0.9).abs() < 0.01);
    assert!((factor(&s, "b", "success", later) - 0.9).abs() < 0.01);
}

#[test]
fn a_degrading_carrier_loses_traffic_within_minutes() {
    let mut s = scorer(&[("a", 1.0, BOTH), ("b", 1.0, BOTH)]);
    // A long good history for a...
    for i in 0..600 {
        s.on_final("a", "+44", None, true, Some(1_000), T0 + i * 1_000);
        s.on_final("b", "+44", None, i % 10 != 0, Some(1_000), T0 + i * 1_000);
    }
    assert_eq!(
        pick(&s, &["a", "b"], None, T0 + 600_000).as_deref(),
        Some("a")
    );
    // ...then a fails everything, at 1 message a second.
    let mut shifted = None;
    for i in 0..600 {
        let now = T0 + 600_000 + i * 1_000;
        s.on_final("a", "+44", None, false, Some(1_000), now);
        s.on_final("b", "+44", None, i % 10 != 0, Some(1_000), now);
        if pick(&s, &["a", "b"], None, now).as_deref() == Some("b") {
            shifted = Some(i);
            break;
        }
    }
    let after = shifted.expect("traffic shifted");
    assert!(after < 180, "shifted after {after} s");
}

#[test]
fn receipt_latency_counts() {
    let mut s = scorer(&[("a", 1.0, BOTH), ("b", 1.0, BOTH)]);
    for t in [None, Some("otp")] {
        for _ in 0..20 {
            s.on_final("a", "+44", t, true, Some(60_000), T0);
            s.on_final("b", "+44", t, true, Some(500), T0);
        }
    }
    assert!(factor(&s, "a", "latency", T0) < 0.2);
    assert!(factor(&s, "b", "latency", T0) > 0.9);
    assert_eq!(pick(&s, &["a", "b"], Some("otp"), T0).as_deref(), Some("b"));
}

#[test]
fn submit_errors_count_and_a_burst_opens_the_circuit() {
    let mut s = scorer(&[("a", 1.0, BOTH), ("b", 1.0, BOTH)]);
    s.on_submitted("a", "+44", None, T0);
    for _ in 0..3 {
        s.on_submit_error("a", "+44", None, T0);
    }
    assert!(factor(&s, "a", "errors", T0) < 0.6);
    assert_eq!(pick(&s, &["a", "b"], None, T0).as_deref(), Some("b"));
    for _ in 0..2 {
        s.on_submit_error("a", "+44", None, T0);
    }
    assert!(s.circuit_open("a", T0), "5 in a row");
    let c = s.choose(&cands(&["a"]), "+44", "SHOP", None, 0.99, T0);
    assert!(c.is_none(), "an open circuit is a hard constraint");
    // After breaker_open_ms the circuit is half-open: usable, with health 0.5; one more
    // error opens it again at once, a success closes it.
    let later = T0 + 31_000;
    assert!(!s.circuit_open("a", later));
    assert_eq!(factor(&s, "a", "health", later), 0.5);
    s.on_submit_error("a", "+44", None, later);
    assert!(s.circuit_open("a", later + 1));
    s.on_submitted("a", "+44", None, later + 40_000);
    assert_eq!(factor(&s, "a", "health", later + 40_000), 1.0);
}

#[test]
fn a_carrier_reported_down_is_excluded() {
    let mut s = scorer(&[("a", 1.0, BOTH), ("b", 1.0, BOTH)]);
    s.set_down("a", true);
    let c = s
        .choose(&cands(&["a", "b"]), "+44", "SHOP", None, 0.99, T0)
        .unwrap();
    assert_eq!(c.carrier, "b");
    assert_eq!(
        c.explain.alternatives[0].excluded.as_deref(),
        Some("circuit_open")
    );
    s.set_down("a", false);
    assert_eq!(pick(&s, &["a", "b"], None, T0).as_deref(), Some("a"));
}

#[test]
fn load_against_the_throughput_limit_spreads_traffic() {
    let mut s = scorer(&[("a", 1.0, BOTH), ("b", 1.0, BOTH)]);
    for i in 0..10 {
        s.on_routed("a", T0 + i);
    }
    assert!(factor(&s, "a", "load", T0 + 10) < 0.1);
    assert_eq!(factor(&s, "b", "load", T0 + 10), 1.0);
    assert_eq!(pick(&s, &["a", "b"], None, T0 + 10).as_deref(), Some("b"));
    assert!(
        factor(&s, "a", "load", T0 + 10_000) > 0.95,
        "load is the last second"
    );
}

#[test]
fn a_full_window_counts_as_load_until_the_carrier_answers() {
    let mut s = scorer(&[("a", 1.0, BOTH), ("b", 1.0, BOTH)]);
    s.config.carriers.get_mut("a").unwrap().window = Some(4);
    s.config.carriers.get_mut("a").unwrap().max_tps = 1e9; // rate alone is no load
    for _ in 0..3 {
        s.on_routed("a", T0);
    }
    assert!(
        (factor(&s, "a", "load", T0 + 60_000) - 0.25).abs() < 1e-9,
        "3 of 4 in flight"
    );
    s.on_submitted("a", "+44", None, T0 + 1);
    s.on_submit_error("a", "+44", None, T0 + 2);
    assert!(
        (factor(&s, "a", "load", T0 + 60_000) - 0.75).abs() < 1e-9,
        "1 of 4 in flight"
    );
}

#[test]
fn price_matters_most_for_promotional_traffic() {
    let mut s = scorer(&[("dear", 0.05, BOTH), ("cheap", 0.01, BOTH)]);
    // dear delivers a little better.
    for _ in 0..20 {
        s.on_final("dear", "+44", Some("promotional"), true, Some(1_000), T0);
        s.on_final("cheap", "+44", Some("promotional"), true, Some(1_000), T0);
        s.on_final("dear", "+44", Some("otp"), true, Some(1_000), T0);
        s.on_final("cheap", "+44", Some("otp"), true, Some(4_000), T0);
    }
    assert_eq!(factor(&s, "cheap", "price", T0), 1.0);
    assert!((s.factors("dear", "+44", None, 0.01, T0)[4].value - 0.2).abs() < 1e-9);
    assert_eq!(
        pick(&s, &["dear", "cheap"], Some("promotional"), T0).as_deref(),
        Some("cheap")
    );
    assert_eq!(
        pick(&s, &["dear", "cheap"], Some("otp"), T0).as_deref(),
        Some("dear")
    );
}

#[test]
fn maximum_price_and_sender_type_are_hard_constraints() {
    let mut s = scorer(&[("dear", 0.05, BOTH), ("numeric-only", 0.01, &["numeric"])]);
    s.config.types.get_mut("promotional").unwrap().max_price = Some(0.02);
    let c = s.choose(
        &cands(&["dear", "numeric-only"]),
        "+44",
        "SHOP",
        Some("promotional"),
        0.99,
        T0,
    );
    assert!(
        c.is_none(),
        "dear is too dear, numeric-only cannot send from SHOP"
    );
    let c = s
        .choose(
            &cands(&["dear", "numeric-only"]),
            "+44",
            "447700900123",
            Some("promotional"),
            0.99,
            T0,
        )
        .unwrap();
    assert_eq!(c.carrier, "numeric-only");
    let why: Vec<_> = c
        .explain
        .alternatives
        .iter()
        .map(|a| a.excluded.as_deref())
        .collect();
    assert_eq!(why, [Some("price")]);
}

#[test]
fn tried_carriers_stay_excluded_and_the_explanation_lists_everyone() {
    let s = scorer(&[("a", 1.0, BOTH), ("b", 1.0, BOTH), ("c", 1.0, BOTH)]);
    let mut cs = cands(&["a", "b", "c"]);
    cs[0].excluded = Some("tried");
    let c = s.choose(&cs, "+44", "SHOP", None, 0.99, T0).unwrap();
    assert_eq!(c.carrier, "b");
    let e = &c.explain;
    assert!(e.score.unwrap() > 0.0 && e.score.unwrap() <= 1.0);
    assert_eq!(e.factors.len(), 6);
    let alts: Vec<_> = e
        .alternatives
        .iter()
        .map(|a| (a.carrier.as_str(), a.excluded.as_deref(), a.score.is_some()))
        .collect();
    assert_eq!(alts, [("a", Some("tried"), false), ("c", None, true)]);
}

#[test]
fn exploration_takes_the_runner_up_at_the_configured_rate() {
    let mut s = scorer(&[("a", 1.0, BOTH), ("b", 1.0, BOTH)]);
    s.config.exploration = 0.05;
    for _ in 0..50 {
        s.on_final("b", "+44", None, false, None, T0);
    }
    let explored = (0..10_000)
        .filter(|i| {
            let d = draw(&format!("m{i}"), 1);
            s.choose(&cands(&["a", "b"]), "+44", "SHOP", None, d, T0)
                .unwrap()
                .carrier
                == "b"
        })
        .count();
    assert!((350..650).contains(&explored), "{explored} of 10000");
    assert_eq!(draw("m1", 1), draw("m1", 1), "replays decide the same");
}

proptest::proptest! {
    /// Whatever the evidence, the score is in [0, 1], the chosen carrier is feasible,
    /// and without exploration no feasible alternative scores higher.
    #[test]
    fn choices_are_feasible_and_best(
        outcomes in proptest::collection::vec((0usize..3, proptest::bool::ANY, 0i64..120_000, 0i64..600_000), 0..60),
        down in 0usize..4,
    ) {
        let names = ["a", "b", "c"];
        let mut s = scorer(&[("a", 0.02, BOTH), ("b", 0.01, BOTH), ("c", 0.03, BOTH)]);
        for (c, ok, lat, at) in &outcomes {
            s.on_final(names[*c], "+44", None, *ok, Some(*lat), T0 + at);
        }
        if down < 3 {
            s.set_down(names[down], true);
        }
        let now = T0 + 600_000;
        match s.choose(&cands(&names), "+44", "SHOP", None, 0.99, now) {
            None => proptest::prop_assert!(false, "two carriers are always up"),
            Some(c) => {
                let score = c.explain.score.unwrap();
                proptest::prop_assert!((0.0..=1.0).contains(&score));
                proptest::prop_assert!(!s.circuit_open(&c.carrier, now));
                for a in &c.explain.alternatives {
                    if let Some(other) = a.score {
                        proptest::prop_assert!(other <= score + 1e-12);
                    }
                }
            }
        }
    }
}
