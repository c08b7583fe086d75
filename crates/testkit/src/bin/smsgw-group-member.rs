//! A consumer-group member for measuring a broker's group coordinator
//! (`tests/tansu_groups.rs`): joins `group` on `topic`, prints its assignment as
//! `assigned <p,p,...>` each time it changes, and leaves the group cleanly when stdin
//! closes. Killing it with SIGKILL is a member that dies without leaving.
//!
//! Usage: `smsgw-group-member <brokers> <topic> <group> [group.instance.id]`

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use smsgw_kafka::rdkafka;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, brokers, topic, group, rest @ ..] = args.as_slice() else {
        anyhow::bail!("usage: smsgw-group-member <brokers> <topic> <group> [instance-id]");
    };
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .set("enable.auto.commit", "false");
    if let Some(id) = rest.first() {
        cfg.set("group.instance.id", id);
    }
    let consumer: BaseConsumer = cfg.create()?;
    consumer.subscribe(&[topic])?;
    let closed = Arc::new(AtomicBool::new(false));
    let flag = closed.clone();
    std::thread::spawn(move || {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        flag.store(true, Ordering::SeqCst);
    });
    let mut last: Option<Vec<i32>> = None;
    while !closed.load(Ordering::SeqCst) {
        let _ = consumer.poll(Duration::from_millis(100));
        let mut now: Vec<i32> = consumer
            .assignment()?
            .elements()
            .iter()
            .map(|e| e.partition())
            .collect();
        now.sort_unstable();
        if last.as_ref() != Some(&now) {
            let list: Vec<String> = now.iter().map(i32::to_string).collect();
            println!("assigned {}", list.join(","));
            std::io::stdout().flush()?;
            last = Some(now);
        }
    }
    consumer.unsubscribe();
    drop(consumer);
    println!("left");
    Ok(())
}
