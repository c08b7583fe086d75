//! The ledger check: the event log held against what the carrier really did.
//!
//! The fault suite can show that every message *ended*; this shows that every end is
//! *true*. Its inputs are the whole event log (decoded [`Event`]s, any order) and the
//! carrier's own ledger: the JSON lines our carrier simulator writes when `ledger` is
//! set, one `{"ev": "accepted", "id", "dest", "parts"}` per submit it took and one
//! `{"ev": "receipt", "id", "dest", "stat"}` per receipt it decided ([`parse_carrier`]).
//!
//! [`check`] folds both into a [`Report`]:
//! - accepted messages, and their final states;
//! - **lost**: accepted messages with no final state;
//! - messages with **more than one** final state;
//! - **contradicted**: a final state the carrier disagrees with (the log says delivered
//!   and the carrier's receipt for that submit said otherwise, or the carrier delivered a
//!   submit the log knows and the log ends the message another way, or delivered a
//!   copy the log has no submit for to a number with only this message);
//! - destinations **texted more than once** (the carrier took more live copies than there
//!   are messages to that number; a copy whose receipt failed reached nobody), and how
//!   many of those the log flags (`possible_duplicate`, an `ambiguous` submit failure, or
//!   a receipt timeout followed by another attempt).
//!
//! [`Report::failures`] lists what breaks the delivery promise (lost, several finals,
//! contradicted, unflagged duplicates); `smsgw-admin ledger` exits non-zero on any. The
//! check is pure: the caller reads the log and the file. Carrier ids are compared as
//! the gateway stores them (`smsgw_smpp::normalize_message_id`).
//!
//! [`client`] counts the same for a gateway with no event log (Kannel), from what its
//! client was told: accepted requests and delivery reports.

pub mod client;
pub use client::{check_client, ClientMessage, ClientReport};

use serde::Deserialize;
use smsgw_domain::{Event, EventPayload, Message};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

/// What can go wrong reading a carrier ledger; the caller stops and reports it.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// A line is not one of the two record shapes.
    #[error("carrier ledger line {line}: {source}")]
    BadLine {
        /// 1-based line number.
        line: usize,
        /// Why it did not parse.
        source: serde_json::Error,
    },
}

/// One line of the carrier's ledger.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "ev", rename_all = "lowercase")]
pub enum CarrierLine {
    /// The carrier took a submit (one part of a concatenated message, or a whole one).
    Accepted {
        /// The carrier's id for it.
        id: String,
        /// Destination as the carrier saw it.
        dest: String,
        /// Part number and total (`[1, 1]` when whole).
        parts: [i32; 2],
    },
    /// The carrier decided that submit's fate and reported it.
    Receipt {
        /// The carrier's id.
        id: String,
        /// Destination.
        dest: String,
        /// The receipt's `stat` (`DELIVRD`, `UNDELIV`, ...).
        stat: String,
    },
}

/// Parses a JSON-lines carrier ledger; blank lines are skipped.
pub fn parse_carrier(text: &str) -> Result<Vec<CarrierLine>, LedgerError> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|source| LedgerError::BadLine {
                line: i + 1,
                source,
            })
        })
        .collect()
}

/// A final state the carrier disagrees with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contradiction {
    /// The message.
    pub message_id: String,
    /// Its final state in the log.
    pub state: String,
    /// What the carrier did.
    pub carrier: String,
}

/// The check's result for one run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Events read.
    pub events: usize,
    /// Messages with a `MessageAccepted`.
    pub accepted: usize,
    /// Messages per final state (rejected requests included).
    pub finals: BTreeMap<String, usize>,
    /// Accepted messages with no final state.
    pub lost: Vec<String>,
    /// Messages with more than one final event.
    pub several_finals: Vec<String>,
    /// Final states the carrier contradicts.
    pub contradicted: Vec<Contradiction>,
    /// Final states contradicted by a copy the log has no submit for, where the log
    /// itself says the carrier may have had one (an `ambiguous` submit: the link broke
    /// before the carrier's answer, so its id, and its receipt, were never known). The
    /// log is honest about the doubt, the final state still false; reported, not failed.
    pub contradicted_flagged: Vec<Contradiction>,
    /// Submits the carrier took.
    pub carrier_submits: usize,
    /// Destinations that received more live copies than they have messages.
    pub texted_twice: usize,
    /// ... of which the log flags as possibly duplicated.
    pub texted_twice_flagged: usize,
    /// Destinations texted more than once with no flag in the log.
    pub unflagged_duplicates: Vec<String>,
    /// `MessageSubmitted` events flagged `possible_duplicate` (sent again after a crash).
    pub possible_duplicate_flags: usize,
    /// The event history of up to ten failing messages (lost, several finals,
    /// contradicted, texted twice unflagged), for diagnosis.
    pub histories: BTreeMap<String, String>,
}

impl Report {
    /// What breaks the delivery promise; empty when the run is clean.
    pub fn failures(&self) -> Vec<String> {
        let mut f = Vec::new();
        let sample = |v: &[String]| v.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
        if !self.lost.is_empty() {
            f.push(format!(
                "{} accepted messages have no final state (e.g. {})",
                self.lost.len(),
                sample(&self.lost)
            ));
        }
        if !self.several_finals.is_empty() {
            f.push(format!(
                "{} messages have more than one final state (e.g. {})",
                self.several_finals.len(),
                sample(&self.several_finals)
            ));
        }
        if let Some(c) = self.contradicted.first() {
            f.push(format!(
                "{} final states contradict the carrier (e.g. {} ends {} but the carrier {})",
                self.contradicted.len(),
                c.message_id,
                c.state,
                c.carrier
            ));
        }
        if !self.unflagged_duplicates.is_empty() {
            f.push(format!(
                "{} destinations were texted more than once without a flag in the log (e.g. {})",
                self.unflagged_duplicates.len(),
                sample(&self.unflagged_duplicates)
            ));
        }
        f
    }
}

/// One line per event: `kind attempt [carrier id] [flags]`, in log order.
fn history(evs: &[&Event]) -> String {
    evs.iter()
        .map(|e| {
            let detail = match &e.payload {
                EventPayload::Submitted(s) => format!(
                    " {}{}",
                    s.carrier_message_id,
                    if s.possible_duplicate {
                        " possible_duplicate"
                    } else {
                        ""
                    }
                ),
                EventPayload::SubmitFailed(f) => {
                    format!(
                        " {}{}",
                        f.reason,
                        if f.ambiguous { " ambiguous" } else { "" }
                    )
                }
                EventPayload::Delivered(d) => format!(" {}", d.carrier_message_id),
                EventPayload::DeliveryFailed(f) => format!(" {}", f.reason),
                _ => String::new(),
            };
            format!("{} @{}{detail}", e.event_id, e.occurred_at_ms)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "events read:                  {}", self.events)?;
        writeln!(f, "messages accepted:            {}", self.accepted)?;
        let finals: Vec<String> = self
            .finals
            .iter()
            .map(|(s, n)| format!("{s} {n}"))
            .collect();
        writeln!(f, "final states:                 {}", finals.join(", "))?;
        writeln!(f, "lost (no final state):        {}", self.lost.len())?;
        writeln!(
            f,
            "more than one final state:    {}",
            self.several_finals.len()
        )?;
        writeln!(
            f,
            "contradicted by the carrier:  {}",
            self.contradicted.len()
        )?;
        writeln!(f, "submits the carrier took:     {}", self.carrier_submits)?;
        writeln!(
            f,
            "destinations texted twice:    {} ({} flagged, {} unflagged)",
            self.texted_twice,
            self.texted_twice_flagged,
            self.unflagged_duplicates.len()
        )?;
        write!(
            f,
            "possible_duplicate flags:     {}",
            self.possible_duplicate_flags
        )?;
        for (id, h) in &self.histories {
            write!(f, "\n  {id}: {h}")?;
        }
        Ok(())
    }
}

/// A destination as both sides compare it: digits only, no `+`.
fn number(dest: &str) -> &str {
    dest.trim_start_matches('+')
}

/// True for a receipt `stat` that says the handset got the message.
fn delivered(stat: &str) -> bool {
    stat.eq_ignore_ascii_case("DELIVRD")
}

/// The carrier's side, indexed by the carrier id as the gateway normalises it.
struct Carrier {
    /// Receipt stat per carrier id.
    stat: HashMap<String, String>,
    /// Carrier ids taken.
    taken: HashSet<String>,
    /// Live copies per destination: first parts taken whose receipt did not fail.
    live: HashMap<String, usize>,
    /// First parts per destination whose receipt said delivered.
    delivered_firsts: HashMap<String, Vec<String>>,
    /// First parts taken per destination.
    firsts: HashMap<String, Vec<String>>,
    submits: usize,
}

impl Carrier {
    fn new(lines: &[CarrierLine]) -> Self {
        let id = smsgw_smpp::normalize_message_id;
        let mut c = Carrier {
            stat: HashMap::new(),
            taken: HashSet::new(),
            live: HashMap::new(),
            delivered_firsts: HashMap::new(),
            firsts: HashMap::new(),
            submits: 0,
        };
        let mut firsts: HashMap<&str, Vec<String>> = HashMap::new();
        for l in lines {
            match l {
                CarrierLine::Accepted {
                    id: raw,
                    dest,
                    parts,
                } => {
                    c.submits += 1;
                    c.taken.insert(id(raw));
                    if parts[0] <= 1 {
                        firsts.entry(number(dest)).or_default().push(id(raw));
                    }
                }
                CarrierLine::Receipt { id: raw, stat, .. } => {
                    c.stat.insert(id(raw), stat.clone());
                }
            }
        }
        for (dest, ids) in firsts {
            let live = ids
                .iter()
                .filter(|id| c.stat.get(*id).is_none_or(|s| delivered(s)))
                .count();
            c.live.insert(dest.to_string(), live);
            let done: Vec<String> = ids
                .iter()
                .filter(|id| c.stat.get(*id).is_some_and(|s| delivered(s)))
                .cloned()
                .collect();
            c.delivered_firsts.insert(dest.to_string(), done);
            c.firsts.insert(dest.to_string(), ids);
        }
        c
    }
}

/// Holds the event log against the carrier's ledger. See the crate doc.
pub fn check(events: &[Event], carrier: &[CarrierLine]) -> Report {
    let mut by_id: HashMap<&str, Vec<&Event>> = HashMap::new();
    for e in events {
        by_id.entry(e.message_id.as_str()).or_default().push(e);
    }
    let car = Carrier::new(carrier);
    let mut r = Report {
        events: events.len(),
        carrier_submits: car.submits,
        ..Report::default()
    };
    // Messages and flags per destination, for the duplicate count.
    let mut per_dest: HashMap<String, (usize, bool)> = HashMap::new();
    let mut dest_ids: HashMap<String, Vec<&str>> = HashMap::new();
    // Carrier ids the log has a submit for, and the messages that ended.
    let mut known: HashSet<String> = HashSet::new();
    let mut ended: Vec<Ended<'_>> = Vec::new();
    let mut ids: Vec<&str> = by_id.keys().copied().collect();
    ids.sort_unstable();
    for id in ids {
        let evs = &by_id[id];
        let m = Message::replay(id, evs.iter().copied());
        let finals: HashSet<&str> = evs
            .iter()
            .filter(|e| is_final(&e.payload))
            .map(|e| e.event_id.as_str())
            .collect();
        if finals.len() > 1 {
            r.several_finals.push(id.to_string());
        }
        let state = m.state();
        if state.is_terminal() {
            *r.finals.entry(state.as_str().to_string()).or_default() += 1;
        }
        let Some(acc) = m.accepted() else { continue };
        r.accepted += 1;
        if !state.is_terminal() {
            r.lost.push(id.to_string());
        }
        let mut flagged = false;
        let mut ambiguous = false;
        let mut submitted: Vec<Vec<String>> = Vec::new();
        let mut seen = HashSet::new();
        for e in evs.iter().filter(|e| seen.insert(e.event_id.as_str())) {
            match &e.payload {
                EventPayload::Submitted(s) => {
                    flagged |= s.possible_duplicate;
                    r.possible_duplicate_flags += usize::from(s.possible_duplicate);
                    submitted.push(s.part_ids().map(smsgw_smpp::normalize_message_id).collect());
                }
                EventPayload::SubmitFailed(f) => {
                    flagged |= f.ambiguous;
                    ambiguous |= f.ambiguous;
                }
                EventPayload::DeliveryFailed(f) => flagged |= f.timed_out,
                _ => {}
            }
        }
        let entry = per_dest
            .entry(number(&acc.destination).to_string())
            .or_default();
        entry.0 += 1;
        entry.1 |= flagged;
        dest_ids
            .entry(number(&acc.destination).to_string())
            .or_default()
            .push(id);
        if !state.is_terminal() {
            continue;
        }
        let delivered_event = evs.iter().find_map(|e| match &e.payload {
            EventPayload::Delivered(d) => {
                Some(smsgw_smpp::normalize_message_id(&d.carrier_message_id))
            }
            _ => None,
        });
        known.extend(submitted.iter().flatten().cloned());
        ended.push(Ended {
            id,
            state: state.as_str(),
            dest: number(&acc.destination).to_string(),
            delivered_event,
            submitted,
            ambiguous,
        });
    }
    for m in &ended {
        let known_copy = match &m.delivered_event {
            Some(cmid) => match car.stat.get(cmid) {
                Some(s) if delivered(s) => None,
                Some(s) => Some(format!("reported {s} for {cmid}")),
                None if car.taken.contains(cmid) => None, // taken, receipt not logged
                None => Some(format!("never took {cmid}")),
            },
            None => m
                .submitted
                .iter()
                .find(|parts| {
                    parts
                        .iter()
                        .all(|p| car.stat.get(p).is_some_and(|s| delivered(s)))
                })
                .map(|parts| format!("delivered {}", parts.join("+"))),
        };
        // A copy the log never recorded (a submit cut mid-way that the carrier took),
        // when this is the destination's only message.
        let unknown_copy = (m.delivered_event.is_none() && per_dest[&m.dest].0 == 1)
            .then(|| car.delivered_firsts.get(&m.dest))
            .flatten()
            .and_then(|ids| ids.iter().find(|id| !known.contains(*id)))
            .map(|cmid| format!("delivered {cmid}, a copy the log has no submit for"));
        let c = |carrier| Contradiction {
            message_id: m.id.to_string(),
            state: m.state.to_string(),
            carrier,
        };
        match (known_copy, unknown_copy) {
            (Some(carrier), _) => r.contradicted.push(c(carrier)),
            (None, Some(carrier)) if m.ambiguous => r.contradicted_flagged.push(c(carrier)),
            (None, Some(carrier)) => r.contradicted.push(c(carrier)),
            (None, None) => {}
        }
    }
    let mut dests: Vec<(&String, &(usize, bool))> = per_dest.iter().collect();
    dests.sort_unstable();
    for (dest, (messages, flagged)) in dests {
        if car.live.get(dest).copied().unwrap_or(0) > *messages {
            r.texted_twice += 1;
            if *flagged {
                r.texted_twice_flagged += 1;
            } else {
                r.unflagged_duplicates.push(dest.clone());
            }
        }
    }
    let failing = r
        .lost
        .iter()
        .chain(&r.several_finals)
        .map(String::as_str)
        .chain(r.contradicted.iter().map(|c| c.message_id.as_str()))
        .chain(
            r.unflagged_duplicates
                .iter()
                .flat_map(|d| dest_ids.get(d).into_iter().flatten().copied()),
        )
        .take(10)
        .map(|id| (id.to_string(), history(&by_id[id])))
        .collect();
    r.histories = failing;
    r
}

/// A message that ended, as the contradiction check needs it.
struct Ended<'a> {
    id: &'a str,
    state: &'static str,
    /// Destination, digits only.
    dest: String,
    /// The carrier id its `MessageDelivered` names.
    delivered_event: Option<String>,
    /// Carrier ids of its submits, every part's.
    submitted: Vec<Vec<String>>,
    /// One of its submits was cut mid-way (`ambiguous`).
    ambiguous: bool,
}

/// An event that ends a message.
fn is_final(p: &EventPayload) -> bool {
    matches!(
        p,
        EventPayload::Rejected(_)
            | EventPayload::Blocked(_)
            | EventPayload::Delivered(_)
            | EventPayload::Undeliverable(_)
            | EventPayload::Expired(_)
            | EventPayload::Cancelled(_)
    )
}

#[cfg(test)]
mod tests;
