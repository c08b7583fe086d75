//! The ScyllaDB score store against a live CQL server: kassandra (crates.io, an
//! in-memory CQL v4 server) behind the testkit's `cql_shim` (see there for the one
//! driver-internal query it rewrites). The adapter creates the schema from
//! `schemas/cql/carrier_scores.cql`, writes and reads rows with the real `scylla`
//! driver; writes repeated after a redelivery change nothing; one router's evidence
//! reaches another; a restarted router starts from what it wrote.
//!
//! Not exercised here (kassandra does not model it): TTL expiry, consistency levels,
//! several nodes, token-aware routing, authentication, schema agreement. See
//! docs/routing.md.

use kassandra_tester::kassandra::session::KassandraSession;
use kassandra_tester::KassandraTester;
use smsgw_router::scoring::{Candidate, CarrierProfile, Scorer, ScoringConfig};
use smsgw_router::store::ScyllaStore;

const NOW: i64 = 1_800_000_000_000;

fn config() -> ScoringConfig {
    let mut c = ScoringConfig {
        exploration: 0.0,
        ..ScoringConfig::default()
    };
    for name in ["a", "b"] {
        c.carriers.insert(name.into(), CarrierProfile::default());
    }
    c
}

fn best(s: &Scorer) -> String {
    let cands = [
        Candidate {
            carrier: "a",
            excluded: None,
        },
        Candidate {
            carrier: "b",
            excluded: None,
        },
    ];
    s.choose(&cands, "+44", "SHOP", None, 0.99, NOW)
        .unwrap()
        .carrier
}

#[test]
fn scores_round_trip_through_a_live_cql_server() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async {
        KassandraTester::new(KassandraSession::new())
            .in_scope(|server| async move {
                let addr = smsgw_testkit::cql_shim(server).await?;
                let nodes = vec![addr.to_string()];
                let r1 = ScyllaStore::connect(&nodes, "smsgw_test", None, true).await?;

                // Router r1 saw a fail and b deliver.
                let mut s1 = Scorer::new(config());
                for _ in 0..40 {
                    s1.on_final("a", "+44", None, false, Some(2_000), NOW);
                    s1.on_final("b", "+44", None, true, Some(2_000), NOW);
                }
                assert_eq!(best(&s1), "b");
                let rows = s1.export("r1", NOW);
                assert_eq!(rows.len(), 2);
                r1.save(&rows).await?;
                r1.save(&rows).await?; // a redelivered sync: same rows, same values
                let back = r1.load().await?;
                assert_eq!(back.len(), 2, "upserts, not appends: {back:?}");
                let mut sorted = back.clone();
                sorted.sort_by(|x, y| x.carrier.cmp(&y.carrier));
                assert_eq!(sorted, rows);

                // Router r2, on its own connection, has no evidence of its own and
                // follows r1's.
                let r2 = ScyllaStore::connect(&nodes, "smsgw_test", None, true).await?;
                let mut s2 = Scorer::new(config());
                assert_eq!(best(&s2), "a", "route order without evidence");
                s2.absorb(&r2.load().await?, "r2", NOW);
                assert_eq!(best(&s2), "b");
                assert!(
                    s2.export("r2", NOW).is_empty(),
                    "r1's evidence is not r2's to write"
                );

                // r1 restarts: it starts from the rows it wrote.
                let mut restarted = Scorer::new(config());
                restarted.absorb(&r1.load().await?, "r1", NOW);
                assert_eq!(restarted.export("r1", NOW), rows);
                Ok::<(), anyhow::Error>(())
            })
            .await
    })?;
    Ok(())
}
