//! The same ledger for a gateway with no event log (Kannel): what its client was told
//! (the request accepted, then delivery reports) held against the carrier's ledger, so
//! both gateways are counted the same way under the same faults (docs/reliability.md).
//!
//! One message per destination: the carrier's ledger is matched by destination.

use crate::{number, Carrier, CarrierLine, Contradiction};
use std::collections::BTreeMap;
use std::fmt;

/// One message the gateway accepted, and the reports its client received for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientMessage {
    /// The destination (unique per message).
    pub dest: String,
    /// Final reports in arrival order: `true` delivered, `false` failed.
    pub reports: Vec<bool>,
}

/// The check's result for one run of a gateway with no event log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientReport {
    /// Requests the gateway accepted.
    pub accepted: usize,
    /// Messages by their last report (`delivered`, `failed`).
    pub finals: BTreeMap<String, usize>,
    /// Accepted, and the carrier never got them: lost.
    pub never_submitted: Vec<String>,
    /// Accepted with no final report (whether or not the carrier got them).
    pub no_report: Vec<String>,
    /// Messages with more than one final report.
    pub several_reports: Vec<String>,
    /// Last reports the carrier contradicts.
    pub contradicted: Vec<Contradiction>,
    /// Submits the carrier took.
    pub carrier_submits: usize,
    /// Destinations that received more live copies than one (none is flagged: the
    /// gateway keeps no record that could say so).
    pub texted_twice: Vec<String>,
}

impl ClientReport {
    /// What breaks the delivery promise; empty when the run is clean.
    pub fn failures(&self) -> Vec<String> {
        let mut f = Vec::new();
        let count = |what: &str, v: &[String]| {
            (!v.is_empty()).then(|| format!("{} {what} (e.g. {})", v.len(), v[0]))
        };
        f.extend(count(
            "accepted messages never reached the carrier",
            &self.never_submitted,
        ));
        f.extend(count(
            "accepted messages have no final report",
            &self.no_report,
        ));
        f.extend(count(
            "messages have more than one final report",
            &self.several_reports,
        ));
        if let Some(c) = self.contradicted.first() {
            f.push(format!(
                "{} final reports contradict the carrier (e.g. {} reported {} but the carrier {})",
                self.contradicted.len(),
                c.message_id,
                c.state,
                c.carrier
            ));
        }
        f.extend(count(
            "destinations were texted more than once, none flagged",
            &self.texted_twice,
        ));
        f
    }
}

/// Holds what the client was told against the carrier's ledger. See the module doc.
pub fn check_client(messages: &[ClientMessage], carrier: &[CarrierLine]) -> ClientReport {
    let car = Carrier::new(carrier);
    let mut r = ClientReport {
        accepted: messages.len(),
        carrier_submits: car.submits,
        ..ClientReport::default()
    };
    for m in messages {
        let dest = number(&m.dest).to_string();
        let copies = car.firsts.get(&dest).map_or(0, Vec::len);
        if copies == 0 {
            r.never_submitted.push(dest.clone());
        }
        if car.live.get(&dest).copied().unwrap_or(0) > 1 {
            r.texted_twice.push(dest.clone());
        }
        if m.reports.len() > 1 {
            r.several_reports.push(dest.clone());
        }
        let Some(&last) = m.reports.last() else {
            r.no_report.push(dest);
            continue;
        };
        let state = if last { "delivered" } else { "failed" };
        *r.finals.entry(state.to_string()).or_default() += 1;
        let carrier_delivered = car
            .delivered_firsts
            .get(&dest)
            .is_some_and(|v| !v.is_empty());
        let disagreement = match (last, carrier_delivered) {
            (true, false) if copies == 0 => Some("never took it".to_string()),
            (true, false) => Some("reported no copy delivered".to_string()),
            (false, true) => Some("delivered it".to_string()),
            _ => None,
        };
        if let Some(carrier) = disagreement {
            r.contradicted.push(Contradiction {
                message_id: dest,
                state: state.to_string(),
                carrier,
            });
        }
    }
    // Ids only appear as destinations here: sorted, so the report reads the same twice.
    for v in [
        &mut r.never_submitted,
        &mut r.no_report,
        &mut r.several_reports,
        &mut r.texted_twice,
    ] {
        v.sort();
    }
    r
}

impl fmt::Display for ClientReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let finals: Vec<String> = self
            .finals
            .iter()
            .map(|(s, n)| format!("{s} {n}"))
            .collect();
        writeln!(f, "requests accepted:            {}", self.accepted)?;
        writeln!(f, "final reports:                {}", finals.join(", "))?;
        writeln!(
            f,
            "never reached the carrier:    {}",
            self.never_submitted.len()
        )?;
        writeln!(f, "no final report:              {}", self.no_report.len())?;
        writeln!(
            f,
            "more than one final report:   {}",
            self.several_reports.len()
        )?;
        writeln!(
            f,
            "contradicted by the carrier:  {}",
            self.contradicted.len()
        )?;
        writeln!(f, "submits the carrier took:     {}", self.carrier_submits)?;
        write!(
            f,
            "destinations texted twice:    {} (0 flagged, {} unflagged)",
            self.texted_twice.len(),
            self.texted_twice.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn took(id: &str, dest: &str) -> CarrierLine {
        CarrierLine::Accepted {
            id: id.into(),
            dest: dest.into(),
            parts: [1, 1],
        }
    }

    fn receipt(id: &str, dest: &str, stat: &str) -> CarrierLine {
        CarrierLine::Receipt {
            id: id.into(),
            dest: dest.into(),
            stat: stat.into(),
        }
    }

    fn msg(dest: &str, reports: &[bool]) -> ClientMessage {
        ClientMessage {
            dest: dest.into(),
            reports: reports.to_vec(),
        }
    }

    #[test]
    fn a_clean_run_has_no_failures() {
        // Given two messages the carrier took and delivered, each reported once,
        let carrier = [
            took("1", "441"),
            receipt("1", "441", "DELIVRD"),
            took("2", "442"),
            receipt("2", "442", "UNDELIV"),
        ];
        // when checked,
        let r = check_client(&[msg("+441", &[true]), msg("442", &[false])], &carrier);
        // then nothing fails and the finals are counted.
        assert_eq!(r.failures(), Vec::<String>::new());
        assert_eq!(r.finals.get("delivered"), Some(&1));
        assert_eq!(r.finals.get("failed"), Some(&1));
        assert_eq!(r.carrier_submits, 2);
    }

    #[test]
    fn each_broken_promise_is_counted() {
        // Given a message the carrier never took, one taken twice and delivered twice,
        // one with two reports, one reported delivered that the carrier failed, and one
        // reported failed that the carrier delivered,
        let carrier = [
            took("2a", "442"),
            receipt("2a", "442", "DELIVRD"),
            took("2b", "442"),
            receipt("2b", "442", "DELIVRD"),
            took("3", "443"),
            receipt("3", "443", "DELIVRD"),
            took("4", "444"),
            receipt("4", "444", "UNDELIV"),
            took("5", "445"),
            receipt("5", "445", "DELIVRD"),
        ];
        let messages = [
            msg("441", &[]),
            msg("442", &[true]),
            msg("443", &[true, true]),
            msg("444", &[true]),
            msg("445", &[false]),
        ];
        // when checked,
        let r = check_client(&messages, &carrier);
        // then each is where it belongs.
        assert_eq!(r.never_submitted, ["441"]);
        assert_eq!(r.no_report, ["441"]);
        assert_eq!(r.texted_twice, ["442"]);
        assert_eq!(r.several_reports, ["443"]);
        let contradicted: Vec<(&str, &str)> = r
            .contradicted
            .iter()
            .map(|c| (c.message_id.as_str(), c.carrier.as_str()))
            .collect();
        assert_eq!(
            contradicted,
            [
                ("444", "reported no copy delivered"),
                ("445", "delivered it")
            ]
        );
        assert_eq!(r.failures().len(), 5);
    }
}
