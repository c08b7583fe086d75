//! What Tansu 0.6's group coordinator does when members come and go, measured with real
//! member processes (`smsgw-group-member`). The facts these tests pin are written down
//! in docs/operations.md ("Scaling out"); a newer Tansu that changes one fails here.

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
    smsgw_testkit::create_topic(&kafka, &name, PARTITIONS)
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

/// A member killed with SIGKILL sends no LeaveGroup. Kafka would give its partitions to
/// the survivor once its session (6 s here) times out; Tansu 0.6 never does: the dead
/// member stays in the group, and even a new member that joins later shares the
/// partitions with it, so the dead member's share is consumed by nobody. This is why
/// smsgw on Tansu uses `assignment = "static"` with a fixed instance number per replica.
#[tokio::test(flavor = "multi_thread")]
async fn tansu_never_hands_a_killed_members_partitions_to_the_survivor() {
    let broker = Broker::start().expect("broker");
    let topic = topic(&broker).await;
    let a = Member::start(&broker.addr, &topic, "g-kill", None);
    within(Duration::from_secs(30), || a.count() == ALL).expect("first member gets all");
    let mut b = Member::start(&broker.addr, &topic, "g-kill", None);
    within(Duration::from_secs(30), || {
        a.count() + b.count() == ALL && b.count() > 0
    })
    .expect("the second member gets a share");
    let kept = a.count();
    b.kill9();
    let took = within(Duration::from_secs(20), || a.count() == ALL);
    eprintln!(
        "fact: 20 s (3 session timeouts) after kill -9 the survivor holds {} of {ALL}",
        a.count()
    );
    assert_eq!(
        took, None,
        "Tansu now replaces a killed member: group assignment may be safe on it (docs/operations.md)"
    );
    assert_eq!(a.count(), kept);
}

/// Static membership (`group.instance.id`) does not work on Tansu 0.6: static members'
/// assignments flap (a lone member gets every partition, then loses them again), so
/// two of them never hold a stable split and it cannot be what brings a killed
/// member's partitions back.
#[tokio::test(flavor = "multi_thread")]
async fn tansu_static_membership_never_settles() {
    let broker = Broker::start().expect("broker");
    let topic = topic(&broker).await;
    let a = Member::start(&broker.addr, &topic, "g-static", Some("a-0"));
    let b = Member::start(&broker.addr, &topic, "g-static", Some("b-0"));
    // The longest time the two held a full split without a change.
    let (mut longest, mut since) = (Duration::ZERO, None::<Instant>);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(25) {
        let split = a.count() > 0 && b.count() > 0 && a.count() + b.count() == ALL;
        match (split, since) {
            (true, None) => since = Some(Instant::now()),
            (false, Some(t)) => {
                longest = longest.max(t.elapsed());
                since = None;
            }
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if let Some(t) = since {
        longest = longest.max(t.elapsed());
    }
    eprintln!("fact: two static members held a full split for at most {longest:?} of 25 s");
    assert!(
        longest < Duration::from_secs(10),
        "Tansu now keeps static members' assignment stable (docs/operations.md)"
    );
}
