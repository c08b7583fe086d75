//! Given/when/then tests of the aggregate, and property tests of the fold.

use super::*;
use proptest::prelude::*;

const ID: &str = "m-1";

fn accepted() -> MessageAccepted {
    MessageAccepted {
        client_id: "shop".into(),
        idempotency_key: Some("k1".into()),
        client_ref: None,
        destination: "+447700900123".into(),
        sender: "SHOP".into(),
        body: "hello".into(),
        encoding: "GSM7".into(),
        segments: 1,
        registered_delivery: None,
        expires_at: None,
        schedule_delivery_at: None,
        callback_url: None,
        message_type: None,
        send_at: None,
    }
}

/// Given these commands were decided and applied in order, return the message.
fn given(commands: Vec<Command>) -> Message {
    let mut m = Message::new(ID);
    for (i, c) in commands.into_iter().enumerate() {
        for e in m.decide(c, i as i64).expect("given command must be legal") {
            m.apply(&e).unwrap();
        }
    }
    m
}

fn route(c: &str) -> Command {
    Command::Route {
        carrier: c.into(),
        strategy: "prefix".into(),
        explain: Default::default(),
    }
}

fn submit_ok(c: &str, attempt: i32) -> Command {
    Command::RecordSubmit {
        carrier: c.into(),
        attempt,
        outcome: SubmitOutcome::Accepted {
            carrier_message_id: "abc".into(),
            segments: 1,
            possible_duplicate: false,
            later_part_ids: vec![],
        },
    }
}

fn submit_failed(c: &str, attempt: i32) -> Command {
    Command::RecordSubmit {
        carrier: c.into(),
        attempt,
        outcome: SubmitOutcome::Failed {
            command_status: Some(0x45),
            reason: "ESME_RSUBMITFAIL".into(),
            retryable: true,
            ambiguous: false,
        },
    }
}

fn receipt(stat: &str) -> Command {
    Command::RecordReceipt {
        carrier: "a".into(),
        carrier_message_id: "abc".into(),
        stat: stat.into(),
        error_code: None,
    }
}

#[test]
fn accepted_routed_submitted_delivered() {
    let m = given(vec![
        Command::Accept(accepted()),
        route("a"),
        submit_ok("a", 1),
        receipt("DELIVRD"),
    ]);
    assert_eq!(m.state(), State::Delivered);
    assert_eq!(m.carrier_message_id(), Some("abc"));
    assert_eq!(m.history().len(), 4);
}

#[test]
fn failed_attempt_is_rerouted_to_second_carrier() {
    let m = given(vec![
        Command::Accept(accepted()),
        route("a"),
        submit_failed("a", 1),
        route("b"),
    ]);
    assert_eq!(m.state(), State::Routed);
    assert_eq!(m.attempt(), 2);
    assert_eq!(m.carriers_tried(), ["a".to_string(), "b".to_string()]);
}

#[test]
fn submit_failed_lists_carriers_tried() {
    let m = given(vec![Command::Accept(accepted()), route("a")]);
    let events = m.decide(submit_failed("a", 1), 9).unwrap();
    match &events[0].payload {
        EventPayload::SubmitFailed(f) => assert_eq!(f.carriers_tried, vec!["a".to_string()]),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn undeliv_receipt_fails_the_attempt_and_the_router_decides_what_next() {
    let m = given(vec![
        Command::Accept(accepted()),
        route("a"),
        submit_ok("a", 1),
        receipt("undeliv"),
    ]);
    assert_eq!(m.state(), State::DeliveryFailed);
    assert!(!m.state().is_terminal());
    match &m.history()[3].payload {
        EventPayload::DeliveryFailed(f) => {
            assert_eq!((f.attempt, f.timed_out), (1, false));
            assert_eq!(f.carriers_tried, ["a".to_string()]);
            assert_eq!(f.stat.as_deref(), Some("undeliv"));
        }
        other => panic!("{other:?}"),
    }
    // Another carrier, or the end with the receipt's stat and error.
    let rerouted = given(vec![
        Command::Accept(accepted()),
        route("a"),
        submit_ok("a", 1),
        receipt("undeliv"),
        route("b"),
    ]);
    assert_eq!((rerouted.state(), rerouted.attempt()), (State::Routed, 2));
    let ended = m
        .decide(
            Command::GiveUp {
                reason: "every carrier failed".into(),
                receipt: Some(("UNDELIV".into(), Some("034".into()))),
            },
            9,
        )
        .unwrap();
    assert!(matches!(&ended[0].payload,
        EventPayload::Undeliverable(u) if u.stat.as_deref() == Some("UNDELIV") && u.error_code.as_deref() == Some("034")));
}

#[test]
fn a_receipt_timeout_fails_the_attempt_and_a_late_receipt_still_delivers() {
    let m = given(vec![
        Command::Accept(accepted()),
        route("a"),
        submit_ok("a", 1),
        Command::TimeOut {
            reason: "no receipt within 60 s".into(),
        },
        route("b"),
    ]);
    assert!(matches!(&m.history()[3].payload, EventPayload::DeliveryFailed(f) if f.timed_out));
    assert_eq!(m.state(), State::Routed);
    let late = m.decide(receipt("DELIVRD"), 10).unwrap();
    assert!(matches!(&late[0].payload, EventPayload::Delivered(d) if d.carrier == "a"));
}

#[test]
fn intermediate_receipt_changes_nothing() {
    let m = given(vec![
        Command::Accept(accepted()),
        route("a"),
        submit_ok("a", 1),
    ]);
    assert_eq!(m.decide(receipt("ENROUTE"), 5).unwrap(), vec![]);
}

#[test]
fn blocked_before_routing() {
    let m = given(vec![
        Command::Accept(accepted()),
        Command::Block {
            reason: "opted_out".into(),
            scope: "global".into(),
        },
    ]);
    assert_eq!(m.state(), State::Blocked);
}

#[test]
fn cannot_route_a_rejected_message() {
    let m = given(vec![Command::Reject(MessageRejected {
        client_id: "shop".into(),
        idempotency_key: None,
        reason_code: "invalid_destination".into(),
        reason: "not a number".into(),
    })]);
    assert_eq!(
        m.decide(route("a"), 1),
        Err(DomainError::IllegalTransition {
            state: State::Rejected,
            what: "CarrierSelected"
        })
    );
}

#[test]
fn submit_result_for_a_stale_attempt_is_refused() {
    let m = given(vec![
        Command::Accept(accepted()),
        route("a"),
        submit_failed("a", 1),
        route("b"),
    ]);
    assert!(m.decide(submit_ok("a", 1), 9).is_err());
}

#[test]
fn event_ids_are_deterministic() {
    let m = given(vec![Command::Accept(accepted())]);
    let e1 = m.decide(route("a"), 1).unwrap();
    let e2 = m.decide(route("a"), 2).unwrap();
    assert_eq!(e1[0].event_id, e2[0].event_id);
    assert_eq!(e1[0].event_id, "m-1/CarrierSelected/1");
}

#[test]
fn snapshot_lets_a_stateless_service_decide() {
    let m = Message::snapshot(ID, State::Routed, 1, vec!["a".into()]);
    let e = m.decide(submit_ok("a", 1), 3).unwrap();
    assert_eq!(e[0].event_id, "m-1/MessageSubmitted/1");
}

#[test]
fn events_of_another_message_are_refused() {
    let mut m = Message::new("other");
    let e = Message::new(ID)
        .decide(Command::Accept(accepted()), 0)
        .unwrap();
    assert!(matches!(
        m.apply(&e[0]),
        Err(DomainError::WrongMessage { .. })
    ));
}

fn any_command() -> impl Strategy<Value = Command> {
    let carrier = prop_oneof![Just("a".to_string()), Just("b".to_string())];
    prop_oneof![
        Just(Command::Accept(accepted())),
        Just(Command::Reject(MessageRejected {
            client_id: "c".into(),
            idempotency_key: None,
            reason_code: "x".into(),
            reason: "x".into(),
        })),
        carrier.clone().prop_map(|c| Command::Route {
            carrier: c,
            strategy: "prefix".into(),
            explain: Default::default(),
        }),
        Just(Command::Block {
            reason: "opted_out".into(),
            scope: "global".into()
        }),
        (carrier.clone(), 0..4i32).prop_map(|(c, a)| submit_ok(&c, a)),
        (carrier.clone(), 0..4i32).prop_map(|(c, a)| submit_failed(&c, a)),
        prop_oneof![
            Just("DELIVRD"),
            Just("UNDELIV"),
            Just("EXPIRED"),
            Just("REJECTD"),
            Just("ENROUTE")
        ]
        .prop_map(receipt),
        Just(Command::Expire {
            reason: "timeout".into()
        }),
        Just(Command::Cancel {
            actor: None,
            stopped_by: "router".into()
        }),
        Just(Command::GiveUp {
            reason: "no carrier".into(),
            receipt: None,
        }),
        Just(Command::GiveUp {
            reason: "receipt".into(),
            receipt: Some(("UNDELIV".into(), Some("034".into()))),
        }),
        Just(Command::TimeOut {
            reason: "no receipt in time".into()
        }),
    ]
}

/// Runs random commands against the aggregate, keeping the events the aggregate allowed.
fn run(commands: &[Command]) -> (Message, Vec<Event>) {
    let mut m = Message::new(ID);
    let mut log = Vec::new();
    for (i, c) in commands.iter().enumerate() {
        if let Ok(events) = m.decide(c.clone(), i as i64) {
            for e in events {
                m.apply(&e).unwrap();
                log.push(e);
            }
        }
    }
    (m, log)
}

/// The legal transition relation, written out independently of the implementation.
/// Expiry (the validity period ran out) ends a message wherever it is before a final
/// state.
fn legal(from: State, to: State) -> bool {
    use State::*;
    matches!(
        (from, to),
        (New, Accepted)
            | (New, Rejected)
            | (Accepted, Routed)
            | (SubmitFailed | DeliveryFailed, Routed)
            | (Accepted | SubmitFailed | DeliveryFailed | Routed, Blocked)
            | (Routed, Submitted)
            | (Routed, SubmitFailed)
            | (Submitted, DeliveryFailed)
            | (Submitted | DeliveryFailed | Routed, Delivered)
            | (
                Accepted | SubmitFailed | DeliveryFailed | Submitted,
                Undeliverable
            )
            | (
                Accepted | SubmitFailed | DeliveryFailed | Routed | Submitted,
                Expired
            )
            | (Accepted | SubmitFailed | DeliveryFailed | Routed, Cancelled)
    )
}

proptest! {
    #[test]
    fn replay_is_deterministic(commands in prop::collection::vec(any_command(), 0..30)) {
        let (live, log) = run(&commands);
        let a = Message::replay(ID, &log);
        let b = Message::replay(ID, &log);
        prop_assert_eq!(&a, &b);
        prop_assert_eq!(a.state(), live.state());
        prop_assert_eq!(a.history(), live.history());
    }

    #[test]
    fn no_illegal_transition_is_possible(commands in prop::collection::vec(any_command(), 0..30)) {
        let mut m = Message::new(ID);
        for (i, c) in commands.iter().enumerate() {
            let before = m.state();
            if let Ok(events) = m.decide(c.clone(), i as i64) {
                for e in events {
                    m.apply(&e).unwrap();
                    prop_assert!(legal(before, m.state()), "{:?} -> {:?}", before, m.state());
                    prop_assert!(!before.is_terminal());
                }
            } else {
                prop_assert_eq!(m.state(), before);
            }
        }
    }

    #[test]
    fn duplicated_events_are_harmless(
        commands in prop::collection::vec(any_command(), 0..30),
        dups in prop::collection::vec(any::<prop::sample::Index>(), 0..10),
    ) {
        let (live, log) = run(&commands);
        let mut noisy = log.clone();
        if !log.is_empty() {
            for d in dups {
                let e = log[d.index(log.len())].clone();
                let at = d.index(noisy.len() + 1).max(1 + noisy.iter().position(|x| x.event_id == e.event_id).unwrap());
                noisy.insert(at.min(noisy.len()), e);
            }
        }
        let replayed = Message::replay(ID, &noisy);
        prop_assert_eq!(replayed.state(), live.state());
        prop_assert_eq!(replayed.history(), live.history());
        prop_assert_eq!(replayed.skipped(), 0);
    }

    #[test]
    fn arbitrary_event_sequences_never_reach_an_illegal_state(
        commands in prop::collection::vec(any_command(), 0..30),
        order in prop::collection::vec(any::<prop::sample::Index>(), 0..30),
    ) {
        // Events decided from one history, then shuffled and replayed: replay must
        // only ever take legal steps, skipping the rest.
        let (_, log) = run(&commands);
        let mut shuffled = log.clone();
        for (i, idx) in order.iter().enumerate() {
            if !shuffled.is_empty() {
                let n = shuffled.len();
                shuffled.swap(i % n, idx.index(n));
            }
        }
        let mut m = Message::new(ID);
        for e in &shuffled {
            let before = m.state();
            if m.apply(e).is_ok() && m.state() != before {
                prop_assert!(legal(before, m.state()));
            }
        }
    }
}
