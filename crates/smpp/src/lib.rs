//! SMPP helpers that sit above the PDU codec (PDUs themselves come from `rusmpp`).
//!
//! Data flow: the dispatcher receives a `deliver_sm` receipt, extracts its text or TLVs,
//! and calls [`parse_receipt_text`] / [`stat_from_message_state`]; the carrier id in it,
//! and the one from `submit_sm_resp`, both go through [`normalize_message_id`] so they
//! meet on the same Kafka key. The carrier simulator builds receipts with
//! [`format_receipt_text`].

use thiserror::Error;

/// A parsed SMPP 3.4 Appendix B receipt text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptText {
    /// `id:` — the carrier's message id.
    pub id: String,
    /// `stat:` — final status, e.g. `DELIVRD`.
    pub stat: String,
    /// `err:` — network error code, if present.
    pub err: Option<String>,
    /// `submit date:` as sent (YYMMDDhhmm or YYMMDDhhmmss).
    pub submit_date: Option<String>,
    /// `done date:` as sent.
    pub done_date: Option<String>,
}

/// Why a receipt text could not be read. The dispatcher counts it and forwards the
/// receipt to the dead-letter topic; the bind stays up.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ReceiptError {
    /// No `id:` field.
    #[error("receipt has no id field")]
    MissingId,
    /// No `stat:` field.
    #[error("receipt has no stat field")]
    MissingStat,
    /// A date that is neither 10 nor 12 digits.
    #[error("bad {field} {value:?}")]
    BadDate {
        /// Field name.
        field: &'static str,
        /// Value.
        value: String,
    },
}

const KEYS: [&str; 8] = [
    "id",
    "sub",
    "dlvrd",
    "submit date",
    "done date",
    "stat",
    "err",
    "text",
];

/// Parses `id:… sub:… dlvrd:… submit date:… done date:… stat:… err:… text:…`.
/// Keys are matched case-insensitively; `text:` takes the rest of the line.
pub fn parse_receipt_text(s: &str) -> Result<ReceiptText, ReceiptError> {
    let lower = s.to_ascii_lowercase();
    // Find each key at a word start, followed by ':'.
    let mut marks: Vec<(usize, &str)> = Vec::new();
    for key in KEYS {
        let pat = format!("{key}:");
        let mut from = 0;
        while let Some(p) = lower[from..].find(&pat) {
            let at = from + p;
            let word_start = at == 0 || lower.as_bytes()[at - 1] == b' ';
            if word_start && !marks.iter().any(|(m, _)| *m == at) {
                marks.push((at, key));
                break;
            }
            from = at + pat.len();
        }
    }
    marks.sort();
    // `text:` swallows everything after it, including things that look like keys.
    if let Some(i) = marks.iter().position(|(_, k)| *k == "text") {
        marks.truncate(i + 1);
    }
    let value = |key: &str| -> Option<String> {
        let i = marks.iter().position(|(_, k)| *k == key)?;
        let start = marks[i].0 + key.len() + 1;
        let end = marks.get(i + 1).map(|(p, _)| *p).unwrap_or(s.len());
        Some(s[start..end].trim().to_string())
    };
    let date = |field: &'static str| -> Result<Option<String>, ReceiptError> {
        match value(field) {
            None => Ok(None),
            Some(v)
                if (v.len() == 10 || v.len() == 12) && v.bytes().all(|b| b.is_ascii_digit()) =>
            {
                Ok(Some(v))
            }
            Some(v) => Err(ReceiptError::BadDate { field, value: v }),
        }
    };
    let id = value("id")
        .filter(|v| !v.is_empty())
        .ok_or(ReceiptError::MissingId)?;
    let stat = value("stat")
        .filter(|v| !v.is_empty())
        .ok_or(ReceiptError::MissingStat)?;
    Ok(ReceiptText {
        id,
        stat: stat.to_ascii_uppercase(),
        err: value("err").filter(|v| !v.is_empty()),
        submit_date: date("submit date")?,
        done_date: date("done date")?,
    })
}

/// Builds a receipt text in the Appendix B format.
pub fn format_receipt_text(
    id: &str,
    stat: &str,
    err: &str,
    submit_date: &str,
    done_date: &str,
    text: &str,
) -> String {
    let dlvrd = if stat == "DELIVRD" { "001" } else { "000" };
    let text: String = text.chars().take(20).collect();
    format!("id:{id} sub:001 dlvrd:{dlvrd} submit date:{submit_date} done date:{done_date} stat:{stat} err:{err} text:{text}")
}

/// Canonical form of a carrier message id: trimmed, lower-case, leading zeros removed.
/// `submit_sm_resp` and receipts often disagree on exactly these.
pub fn normalize_message_id(id: &str) -> String {
    let t = id.trim().trim_end_matches('\0').to_ascii_lowercase();
    let stripped = t.trim_start_matches('0');
    if stripped.is_empty() && !t.is_empty() {
        "0".to_string()
    } else {
        stripped.to_string()
    }
}

/// Maps the `message_state` TLV (SMPP 3.4 §5.2.28) to a receipt `stat`.
pub fn stat_from_message_state(state: u8) -> &'static str {
    match state {
        1 => "ENROUTE",
        2 => "DELIVRD",
        3 => "EXPIRED",
        4 => "DELETED",
        5 => "UNDELIV",
        6 => "ACCEPTD",
        8 => "REJECTD",
        _ => "UNKNOWN",
    }
}

/// A UTC calendar time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UtcTime {
    /// Year (proleptic Gregorian).
    pub year: i64,
    /// 1-12.
    pub month: i64,
    /// 1-31.
    pub day: i64,
    /// 0-23.
    pub hour: i64,
    /// 0-59.
    pub minute: i64,
    /// 0-59.
    pub second: i64,
    /// 0-999.
    pub millis: i64,
}

/// The UTC calendar time of a Unix time in milliseconds.
pub fn utc(unix_ms: i64) -> UtcTime {
    let secs = unix_ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    UtcTime {
        year: yoe + era * 400 + i64::from(month <= 2),
        month,
        day,
        hour: rem / 3600,
        minute: rem % 3600 / 60,
        second: rem % 60,
        millis: unix_ms.rem_euclid(1000),
    }
}

/// An SMPP 3.4 absolute time (section 7.1.1), `YYMMDDhhmmsstnnp`, for a Unix time in
/// milliseconds, written in UTC (`00+`). Used for `validity_period` and
/// `schedule_delivery_time`.
pub fn smpp_absolute_time(unix_ms: i64) -> String {
    let t = utc(unix_ms);
    format!(
        "{:02}{:02}{:02}{:02}{:02}{:02}{}00+",
        t.year.rem_euclid(100),
        t.month,
        t.day,
        t.hour,
        t.minute,
        t.second,
        t.millis / 100
    )
}

/// Unix days of a proleptic Gregorian date (the inverse of the calendar step in [`utc`]).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Why an SMPP time field could not be read.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("SMPP time {value:?}: {why}")]
pub struct TimeError {
    /// The field as sent (cut to 16 characters).
    pub value: String,
    /// What is wrong with it.
    pub why: &'static str,
}

/// Reads an SMPP 3.4 time field (section 7.1.1) as a Unix time in milliseconds:
/// absolute `YYMMDDhhmmsstnn+`/`-` (local time `nn` quarter hours ahead of or behind
/// UTC; years 00-99 are 2000-2099) or relative `YYMMDDhhmmss000R` (added to `now_ms`;
/// a year is 365 days and a month 30, as SMSCs count them). Empty is `None`.
pub fn parse_smpp_time(s: &str, now_ms: i64) -> Result<Option<i64>, TimeError> {
    if s.is_empty() {
        return Ok(None);
    }
    let bad = |why| TimeError {
        value: s.chars().take(16).collect(),
        why,
    };
    let b = s.as_bytes();
    if b.len() != 16 {
        return Err(bad("must be 16 characters"));
    }
    if !b[..15].iter().all(u8::is_ascii_digit) {
        return Err(bad("must be 15 digits and a sign"));
    }
    let n = |i: usize| i64::from(b[i] - b'0') * 10 + i64::from(b[i + 1] - b'0');
    let (yy, mo, dd, hh, mi, ss) = (n(0), n(2), n(4), n(6), n(8), n(10));
    let tenths = i64::from(b[12] - b'0');
    let quarters = n(13);
    match b[15] {
        b'R' => {
            let secs = ((yy * 365 + mo * 30 + dd) * 24 + hh) * 3600 + mi * 60 + ss;
            Ok(Some(now_ms + secs * 1000))
        }
        sign @ (b'+' | b'-') => {
            if !(1..=12).contains(&mo) || !(1..=31).contains(&dd) {
                return Err(bad("month or day out of range"));
            }
            if hh > 23 || mi > 59 || ss > 59 || quarters > 48 {
                return Err(bad("time of day or UTC offset out of range"));
            }
            let local = (days_from_civil(2000 + yy, mo, dd) * 86_400 + hh * 3600 + mi * 60 + ss)
                * 1000
                + tenths * 100;
            let offset = quarters * 15 * 60 * 1000;
            Ok(Some(if sign == b'+' {
                local - offset
            } else {
                local + offset
            }))
        }
        _ => Err(bad("must end in +, - or R")),
    }
}

/// RFC 3339 UTC with milliseconds, for example `2026-11-26T19:51:04.123Z`.
pub fn rfc3339(unix_ms: i64) -> String {
    let t = utc(unix_ms);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year, t.month, t.day, t.hour, t.minute, t.second, t.millis
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_is_utc_with_millis() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_723_051_213), "2026-11-26T19:57:31.213Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
    use proptest::prelude::*;

    #[test]
    fn parses_a_full_receipt() {
        let r = parse_receipt_text(
            "id:0012AB sub:001 dlvrd:001 submit date:2611261200 done date:261126120005 stat:DELIVRD err:000 text:hello stat:x",
        )
        .unwrap();
        assert_eq!(r.id, "0012AB");
        assert_eq!(r.stat, "DELIVRD");
        assert_eq!(r.err.as_deref(), Some("000"));
        assert_eq!(r.submit_date.as_deref(), Some("2611261200"));
        assert_eq!(r.done_date.as_deref(), Some("261126120005"));
    }

    #[test]
    fn keys_are_case_insensitive_and_stat_is_upper_cased() {
        let r = parse_receipt_text("ID:7 STAT:undeliv ERR:012").unwrap();
        assert_eq!(
            (r.id.as_str(), r.stat.as_str(), r.err.as_deref()),
            ("7", "UNDELIV", Some("012"))
        );
    }

    #[test]
    fn missing_fields_are_errors() {
        assert_eq!(
            parse_receipt_text("stat:DELIVRD"),
            Err(ReceiptError::MissingId)
        );
        assert_eq!(
            parse_receipt_text("id:1 text:stat:DELIVRD"),
            Err(ReceiptError::MissingStat)
        );
        assert!(matches!(
            parse_receipt_text("id:1 submit date:26 stat:DELIVRD"),
            Err(ReceiptError::BadDate { .. })
        ));
    }

    #[test]
    fn formatted_receipts_parse_back() {
        let s = format_receipt_text(
            "abc",
            "DELIVRD",
            "000",
            "2611261200",
            "2611261201",
            "hi there",
        );
        let r = parse_receipt_text(&s).unwrap();
        assert_eq!((r.id.as_str(), r.stat.as_str()), ("abc", "DELIVRD"));
    }

    #[test]
    fn ids_normalise() {
        assert_eq!(normalize_message_id(" 00AbC\0"), "abc");
        assert_eq!(normalize_message_id("000"), "0");
        assert_eq!(normalize_message_id("42"), "42");
    }

    proptest! {
        #[test]
        fn parsing_never_panics(s in "\\PC{0,200}") {
            let _ = parse_receipt_text(&s);
        }

        #[test]
        fn id_and_stat_survive_a_round_trip(id in "[0-9A-Fa-f]{1,20}", stat in "(DELIVRD|UNDELIV|REJECTD|EXPIRED)", text in "[ -~]{0,30}") {
            let s = format_receipt_text(&id, &stat, "000", "2611261200", "2611261200", &text);
            let r = parse_receipt_text(&s).unwrap();
            prop_assert_eq!(r.id, id);
            prop_assert_eq!(r.stat, stat);
        }
    }

    #[test]
    fn absolute_times_are_utc_yymmddhhmmsstnnp() {
        assert_eq!(smpp_absolute_time(0), "700101000000000+");
        // 2026-11-26 12:34:56.789 UTC
        assert_eq!(smpp_absolute_time(1_795_696_496_789), "261126123456700+");
        // 2000-02-29 23:59:59 UTC (leap day)
        assert_eq!(smpp_absolute_time(951_868_799_000), "000229235959000+");
        assert_eq!(smpp_absolute_time(1_795_696_496_789).len(), 16);
    }

    #[test]
    fn smpp_times_read_back_what_we_write() {
        for t in [
            946_684_800_000_i64,
            1_764_000_000_000,
            1_764_000_000_300,
            4_102_444_799_900,
        ] {
            assert_eq!(parse_smpp_time(&smpp_absolute_time(t), 0), Ok(Some(t)));
        }
    }

    #[test]
    fn smpp_times_apply_the_offset_and_the_relative_form() {
        // 2026-11-30 12:00:00 local, one hour (4 quarters) ahead of UTC: 11:00 UTC.
        let utc11 = days_from_civil(2026, 11, 30) * 86_400_000 + 11 * 3_600_000;
        assert_eq!(parse_smpp_time("261130120000004+", 0), Ok(Some(utc11)));
        assert_eq!(
            parse_smpp_time("261130100000004-", 0),
            Ok(Some(utc11)),
            "one hour behind UTC"
        );
        // 1 day, 2 hours, 3 minutes, 4 seconds from now.
        assert_eq!(
            parse_smpp_time("000001020304000R", 1_000),
            Ok(Some(1_000 + (86_400 + 7_200 + 180 + 4) * 1000))
        );
        assert_eq!(parse_smpp_time("", 5), Ok(None));
        for bad in [
            "2611301200000",
            "26113012000000+4",
            "261330120000000+",
            "26113012000000X+",
            "261130120000000Z",
        ] {
            assert!(parse_smpp_time(bad, 0).is_err(), "{bad}");
        }
    }
}
