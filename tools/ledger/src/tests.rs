//! Given an event log and a carrier ledger, when checked, then the report counts what
//! each broken promise looks like (and a clean run has no failures).

use super::*;
use smsgw_domain::{
    CarrierSelected, DeliveryFailed, MessageAccepted, MessageDelivered, MessageExpired,
    MessageSubmitted, MessageUndeliverable, SubmitFailed,
};

fn accepted(id: &str, dest: &str) -> Event {
    let a = MessageAccepted {
        client_id: "shop".into(),
        idempotency_key: None,
        client_ref: None,
        destination: dest.into(),
        sender: "SHOP".into(),
        body: "hi".into(),
        encoding: "GSM7".into(),
        segments: 1,
        registered_delivery: Some(true),
        expires_at: None,
        schedule_delivery_at: None,
        callback_url: None,
        send_at: None,
        message_type: None,
    };
    Event::new(id, EventPayload::Accepted(a), 0, 1)
}

fn routed(id: &str, attempt: i32) -> Event {
    let c = CarrierSelected {
        carrier: "sim".into(),
        attempt,
        strategy: "score".into(),
        score: None,
        factors: vec![],
        alternatives: vec![],
    };
    Event::new(id, EventPayload::CarrierSelected(c), attempt, 2)
}

fn submitted(id: &str, attempt: i32, cmid: &str, possible_duplicate: bool) -> Event {
    let s = MessageSubmitted {
        carrier: "sim".into(),
        attempt,
        carrier_message_id: cmid.into(),
        segments: 1,
        possible_duplicate,
        later_part_ids: vec![],
    };
    Event::new(id, EventPayload::Submitted(s), attempt, 3)
}

fn ambiguous(id: &str, attempt: i32) -> Event {
    let f = SubmitFailed {
        carrier: "sim".into(),
        attempt,
        command_status: None,
        reason: "link lost".into(),
        retryable: true,
        ambiguous: true,
        carriers_tried: vec!["sim".into()],
    };
    Event::new(id, EventPayload::SubmitFailed(f), attempt, 3)
}

/// A submit the carrier answered with a refusal (not ambiguous).
fn refused(id: &str, attempt: i32) -> Event {
    let mut e = ambiguous(id, attempt);
    if let EventPayload::SubmitFailed(f) = &mut e.payload {
        f.ambiguous = false;
        f.command_status = Some(0x45);
    }
    e
}

fn timed_out(id: &str, attempt: i32) -> Event {
    let f = DeliveryFailed {
        carrier: "sim".into(),
        attempt,
        reason: "no receipt".into(),
        stat: None,
        error_code: None,
        timed_out: true,
        carriers_tried: vec!["sim".into()],
    };
    Event::new(id, EventPayload::DeliveryFailed(f), attempt, 4)
}

fn delivered_ev(id: &str, cmid: &str) -> Event {
    let d = MessageDelivered {
        carrier: "sim".into(),
        carrier_message_id: cmid.into(),
        stat: "DELIVRD".into(),
    };
    Event::new(id, EventPayload::Delivered(d), 0, 5)
}

fn expired(id: &str) -> Event {
    let e = MessageExpired {
        carrier: Some("sim".into()),
        reason: "receipt timeout".into(),
    };
    Event::new(id, EventPayload::Expired(e), 0, 6)
}

fn undeliverable(id: &str) -> Event {
    let u = MessageUndeliverable {
        carrier: Some("sim".into()),
        reason: "UNDELIV".into(),
        stat: Some("UNDELIV".into()),
        error_code: None,
    };
    Event::new(id, EventPayload::Undeliverable(u), 0, 6)
}

fn took(id: &str, dest: &str) -> CarrierLine {
    CarrierLine::Accepted {
        id: id.into(),
        dest: dest.into(),
        parts: [1, 1],
    }
}

fn said(id: &str, dest: &str, stat: &str) -> CarrierLine {
    CarrierLine::Receipt {
        id: id.into(),
        dest: dest.into(),
        stat: stat.into(),
    }
}

/// m1 delivered, m2 undeliverable, both as the carrier says.
fn clean() -> (Vec<Event>, Vec<CarrierLine>) {
    let events = vec![
        accepted("m1", "+4470001"),
        routed("m1", 1),
        submitted("m1", 1, "A1", false),
        delivered_ev("m1", "A1"),
        accepted("m2", "+4470002"),
        routed("m2", 1),
        submitted("m2", 1, "A2", false),
        undeliverable("m2"),
    ];
    let carrier = vec![
        took("A1", "4470001"),
        took("A2", "4470002"),
        said("A1", "4470001", "DELIVRD"),
        said("A2", "4470002", "UNDELIV"),
    ];
    (events, carrier)
}

#[test]
fn a_clean_run_has_no_failures() {
    let (events, carrier) = clean();
    let r = check(&events, &carrier);
    assert_eq!(r.failures(), Vec::<String>::new());
    assert_eq!(r.accepted, 2);
    assert_eq!(r.carrier_submits, 2);
    assert_eq!(
        r.finals,
        BTreeMap::from([("delivered".into(), 1), ("undeliverable".into(), 1)])
    );
}

#[test]
fn an_accepted_message_with_no_final_state_is_lost() {
    let (mut events, carrier) = clean();
    events.push(accepted("m3", "+4470003"));
    events.push(routed("m3", 1));
    let r = check(&events, &carrier);
    assert_eq!(r.lost, vec!["m3".to_string()]);
    assert_eq!(r.failures().len(), 1);
}

#[test]
fn a_second_final_event_is_counted_even_though_the_fold_refuses_it() {
    let (mut events, carrier) = clean();
    events.push(expired("m1"));
    // The same event twice is one event.
    events.push(delivered_ev("m1", "A1"));
    let r = check(&events, &carrier);
    assert_eq!(r.several_finals, vec!["m1".to_string()]);
    assert_eq!(r.finals["delivered"], 1);
}

#[test]
fn a_message_the_carrier_delivered_that_ends_expired_is_contradicted() {
    let (mut events, mut carrier) = clean();
    events.extend([
        accepted("m3", "+4470003"),
        routed("m3", 1),
        submitted("m3", 1, "A3", false),
        expired("m3"),
    ]);
    carrier.extend([took("A3", "4470003"), said("A3", "4470003", "DELIVRD")]);
    let r = check(&events, &carrier);
    assert_eq!(
        r.contradicted,
        vec![Contradiction {
            message_id: "m3".into(),
            state: "expired".into(),
            carrier: "delivered a3".into(),
        }]
    );
    assert_eq!(r.failures().len(), 1);
}

#[test]
fn a_copy_the_log_never_recorded_contradicts_its_end_flagged_when_the_log_says_it_was_cut() {
    // m3's submit was cut mid-way (the log says the carrier may have it); m4 has no
    // submit at all in the log. The carrier delivered a copy of each.
    let (mut events, mut carrier) = clean();
    events.extend([
        accepted("m3", "+4470003"),
        routed("m3", 1),
        ambiguous("m3", 1),
        undeliverable("m3"),
        accepted("m4", "+4470004"),
        routed("m4", 1),
        refused("m4", 1),
        undeliverable("m4"),
    ]);
    carrier.extend([
        took("C3", "4470003"),
        said("C3", "4470003", "DELIVRD"),
        took("C4", "4470004"),
        said("C4", "4470004", "DELIVRD"),
    ]);
    let r = check(&events, &carrier);
    let one = |id: &str, cmid: &str| Contradiction {
        message_id: id.into(),
        state: "undeliverable".into(),
        carrier: format!("delivered {cmid}, a copy the log has no submit for"),
    };
    assert_eq!(r.contradicted_flagged, vec![one("m3", "c3")]);
    assert_eq!(r.contradicted, vec![one("m4", "c4")]);
    assert_eq!(r.failures().len(), 1, "only the unflagged one fails");
}

#[test]
fn delivered_in_the_log_but_not_at_the_carrier_is_contradicted() {
    let (mut events, mut carrier) = clean();
    events.extend([
        accepted("m3", "+4470003"),
        routed("m3", 1),
        submitted("m3", 1, "A3", false),
        delivered_ev("m3", "A3"),
        accepted("m4", "+4470004"),
        routed("m4", 1),
        submitted("m4", 1, "A4", false),
        delivered_ev("m4", "A4"),
    ]);
    carrier.extend([took("A3", "4470003"), said("A3", "4470003", "UNDELIV")]);
    let r = check(&events, &carrier);
    let said: Vec<(&str, &str)> = r
        .contradicted
        .iter()
        .map(|c| (c.message_id.as_str(), c.carrier.as_str()))
        .collect();
    assert_eq!(
        said,
        vec![("m3", "reported UNDELIV for a3"), ("m4", "never took a4")]
    );
}

#[test]
fn an_unflagged_second_copy_fails_and_a_flagged_one_is_counted() {
    let (events, mut carrier) = clean();
    // m1's destination got a second live copy the log never submitted.
    carrier.push(took("B1", "4470001"));
    let r = check(&events, &carrier);
    assert_eq!(r.texted_twice, 1);
    assert_eq!(r.unflagged_duplicates, vec!["4470001".to_string()]);
    assert_eq!(r.failures().len(), 1);

    // The same with the log saying the resend may be a duplicate.
    let mut flagged = events.clone();
    flagged[2] = submitted("m1", 1, "A1", true);
    let r = check(&flagged, &carrier);
    assert_eq!((r.texted_twice, r.texted_twice_flagged), (1, 1));
    assert_eq!(r.possible_duplicate_flags, 1);
    assert!(r.failures().is_empty(), "{:?}", r.failures());
}

#[test]
fn an_ambiguous_failure_or_a_receipt_timeout_flags_the_copy_it_may_have_left() {
    // Attempt 1 was cut mid-submit (the carrier may have it), or submitted and its
    // receipt never came in time; attempt 2 delivered.
    let first_attempts = [
        vec![ambiguous("m1", 1)],
        vec![submitted("m1", 1, "X1", false), timed_out("m1", 1)],
    ];
    for first in first_attempts {
        let (mut events, mut carrier) = clean();
        let mut m1 = vec![accepted("m1", "+4470001"), routed("m1", 1)];
        m1.extend(first);
        m1.extend([
            routed("m1", 2),
            submitted("m1", 2, "A1", false),
            delivered_ev("m1", "A1"),
        ]);
        events.splice(0..4, m1);
        carrier.extend([took("X1", "4470001"), took("X2", "4470001")]);
        let r = check(&events, &carrier);
        assert_eq!((r.texted_twice, r.texted_twice_flagged), (1, 1));
        assert!(r.failures().is_empty(), "{:?}", r.failures());
    }
}

#[test]
fn a_copy_whose_receipt_failed_reached_nobody_and_is_no_duplicate() {
    let (mut events, mut carrier) = clean();
    // m2 failed at the carrier on attempt 1 (UNDELIV), was sent again and delivered.
    events.pop();
    events.extend([
        Event::new(
            "m2",
            EventPayload::DeliveryFailed(DeliveryFailed {
                carrier: "sim".into(),
                attempt: 1,
                reason: "UNDELIV".into(),
                stat: Some("UNDELIV".into()),
                error_code: None,
                timed_out: false,
                carriers_tried: vec!["sim".into()],
            }),
            1,
            4,
        ),
        routed("m2", 2),
        submitted("m2", 2, "B2", false),
        delivered_ev("m2", "B2"),
    ]);
    carrier.extend([took("B2", "+4470002"), said("B2", "4470002", "DELIVRD")]);
    let r = check(&events, &carrier);
    assert_eq!(r.texted_twice, 0);
    assert!(r.failures().is_empty(), "{:?}", r.failures());
}

#[test]
fn the_carrier_ledger_parses_and_names_a_bad_line() {
    let text = "{\"ev\":\"accepted\",\"id\":\"1A\",\"dest\":\"447\",\"parts\":[1,2]}\n\n\
                {\"ev\":\"receipt\",\"id\":\"1A\",\"dest\":\"447\",\"stat\":\"DELIVRD\"}\n";
    assert_eq!(
        parse_carrier(text).unwrap(),
        vec![
            CarrierLine::Accepted {
                id: "1A".into(),
                dest: "447".into(),
                parts: [1, 2]
            },
            said("1A", "447", "DELIVRD"),
        ]
    );
    let err = parse_carrier("{\"ev\":\"accepted\"}\nnot json\n").unwrap_err();
    assert!(
        err.to_string().starts_with("carrier ledger line 1"),
        "{err}"
    );
}
