//! Every broker the tests start on sqlite storage has the header index Tansu 0.6 lacks
//! (`deploy/local/tansu-index.py`): without it each fetched record scans every stored
//! header and the broker slows as its log grows (docs/benchmarks.md).

use smsgw_testkit::Broker;
use std::process::Command;

#[test]
fn a_broker_on_sqlite_has_the_header_index() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("smsgw-index-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let db = dir.join("tansu.db");
    let broker = Broker::start_with_storage(&format!("sqlite:///{}", db.display()))?;
    let plan = Command::new("python3")
        .args([
            "-c",
            "import sqlite3, sys\n\
             db = sqlite3.connect(sys.argv[1])\n\
             print(db.execute(\"explain query plan select k, v from header \
             where topition = 1 and offset_id = 5\").fetchall())",
            &db.display().to_string(),
        ])
        .output()?;
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
    let plan = String::from_utf8_lossy(&plan.stdout);
    assert!(
        plan.contains("header_topition_offset_id"),
        "headers are looked up by a full scan: {plan}"
    );
    Ok(())
}
