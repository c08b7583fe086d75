//! What Tansu 0.6's group coordinator does when members come and go, measured with real
//! member processes (`smsgw-group-member`). The facts these tests pin are written down
//! in docs/operations.md ("Scaling out"); a newer Tansu that changes one fails here.

use smsgw_kafka::{bootstrap_topics, TopicSpec};
use smsgw_testkit::Broker;
use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PARTITIONS: i32 = 4;

/// A member process and its latest assignment.
struct Member {
    child: Child,
    stdin: Option<ChildStdin>,
    assigned: Arc<Mutex<Option<Vec<i32>>>>,
    left: Arc<Mutex<bool>>,
}

impl Member {
    fn start(brokers: &str, topic: &str, group: &str, instance: Option<&str>) -> Member {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_smsgw-group-member"));
        cmd.args([brokers, topic, group]);
        if let Some(i) = instance {
            cmd.arg(i);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("member starts");
        let stdin = child.stdin.take();
        let out = child.stdout.take().expect("stdout");
        let assigned = Arc::new(Mutex::new(None));
        let left = Arc::new(Mutex::new(false));
        let (a, l) = (assigned.clone(), left.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(list) = line.strip_prefix("assigned ") {
                    let ps = list.split(',').filter_map(|p| p.parse().ok()).collect();
                    *a.lock().unwrap() = Some(ps);
                } else if line == "left" {
                    *l.lock().unwrap() = true;
                }
            }
        });
        Member {
            child,
            stdin,
            assigned,
            left,
        }
    }

    fn count(&self) -> usize {
        self.assigned.lock().unwrap().as_ref().map_or(0, Vec::len)
    }

    /// Closes stdin: the member unsubscribes and closes (a clean leave).
    fn leave(&mut self) {
        self.stdin.take();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !*self.left.lock().unwrap() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.wait();
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `cond` holds; returns how long it took, or `None` after `limit`.
fn within(limit: Duration, cond: impl Fn() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

async fn topic(broker: &Broker) -> String {
    let kafka = broker.kafka();
    let name = format!("{}.probe", kafka.topics.prefix);
    bootstrap_topics(
        &kafka,
        &[TopicSpec {
            name: name.clone(),
            partitions: PARTITIONS,
            replication: 1,
            configs: vec![],
        }],
    )
    .await
    .expect("topic created");
    name
}

const ALL: usize = PARTITIONS as usize;

/// Two members share the partitions; when one leaves cleanly the other gets them all.
#[tokio::test(flavor = "multi_thread")]
async fn a_clean_leave_hands_the_partitions_to_the_member_that_stays() {
    let broker = Broker::start().expect("broker");
    let topic = topic(&broker).await;
    let a = Member::start(&broker.addr, &topic, "g-leave", None);
    let t = within(Duration::from_secs(30), || a.count() == ALL).expect("first member gets all");
    eprintln!("fact: first member assigned all {ALL} partitions after {t:?}");
    let mut b = Member::start(&broker.addr, &topic, "g-leave", None);
    let t = within(Duration::from_secs(30), || {
        a.count() + b.count() == ALL && b.count() > 0
    })
    .expect("the second member gets a share");
    eprintln!(
        "fact: after a join the members hold {} + {} after {t:?}",
        a.count(),
        b.count()
    );
    b.leave();
    let t = within(Duration::from_secs(30), || a.count() == ALL)
        .expect("after a clean leave the other member takes every partition");
    eprintln!("fact: after a clean leave the remaining member holds all after {t:?}");
}

/// A member killed with SIGKILL sends no LeaveGroup: Tansu has to notice by the session
/// timeout (6 s here).
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_member_is_replaced_after_its_session_times_out() {
    let broker = Broker::start().expect("broker");
    let topic = topic(&broker).await;
    let a = Member::start(&broker.addr, &topic, "g-kill", None);
    within(Duration::from_secs(30), || a.count() == ALL).expect("first member gets all");
    let mut b = Member::start(&broker.addr, &topic, "g-kill", None);
    within(Duration::from_secs(30), || {
        a.count() + b.count() == ALL && b.count() > 0
    })
    .expect("the second member gets a share");
    b.kill9();
    let took = within(Duration::from_secs(40), || a.count() == ALL);
    eprintln!("fact: after kill -9 the survivor holds all: {took:?} (None = not in 40 s)");
    assert!(
        took.is_some(),
        "the survivor never got the killed member's partitions"
    );
}

/// With static membership (`group.instance.id`) a member killed and started again under
/// the same identity gets its own partitions back.
#[tokio::test(flavor = "multi_thread")]
async fn a_static_member_restarted_under_its_identity_gets_its_partitions_back() {
    let broker = Broker::start().expect("broker");
    let topic = topic(&broker).await;
    let a = Member::start(&broker.addr, &topic, "g-static", Some("a-0"));
    within(Duration::from_secs(30), || a.count() == ALL).expect("first member gets all");
    let mut b = Member::start(&broker.addr, &topic, "g-static", Some("b-0"));
    within(Duration::from_secs(30), || {
        a.count() + b.count() == ALL && b.count() > 0
    })
    .expect("the second member gets a share");
    let before = b.assigned.lock().unwrap().clone();
    b.kill9();
    let b2 = Member::start(&broker.addr, &topic, "g-static", Some("b-0"));
    let took = within(Duration::from_secs(40), || {
        b2.count() > 0 && a.count() + b2.count() == ALL
    });
    eprintln!(
        "fact: static member restarted: took {took:?}, had {before:?}, now {:?}, other {:?}",
        b2.assigned.lock().unwrap(),
        a.assigned.lock().unwrap()
    );
    assert!(
        took.is_some(),
        "the restarted static member got nothing back"
    );
}
