//! Quiet hours: promotional messages are held while it is night where the recipient is.
//!
//! The recipient's time zone comes from the number's country calling code. Countries
//! spanning several zones count as quiet when it is quiet in *any* of their zones (the
//! range of standard-time offsets below), which may hold a message longer than needed
//! but never texts anyone at night. Daylight saving time is ignored: the window is
//! checked in standard time, so it shifts by an hour in summer. Unknown codes use UTC.

/// (calling code, lowest and highest standard UTC offset in minutes).
const ZONES: &[(&str, i32, i32)] = &[
    ("1", -600, -210),  // US, Canada, Caribbean (Hawaii .. Newfoundland)
    ("7", 120, 720),    // Russia, Kazakhstan
    ("20", 120, 120),   // Egypt
    ("27", 120, 120),   // South Africa
    ("30", 120, 120),   // Greece
    ("31", 60, 60),     // Netherlands
    ("32", 60, 60),     // Belgium
    ("33", 60, 60),     // France
    ("34", 60, 60),     // Spain
    ("39", 60, 60),     // Italy
    ("41", 60, 60),     // Switzerland
    ("43", 60, 60),     // Austria
    ("44", 0, 0),       // United Kingdom
    ("45", 60, 60),     // Denmark
    ("46", 60, 60),     // Sweden
    ("47", 60, 60),     // Norway
    ("48", 60, 60),     // Poland
    ("49", 60, 60),     // Germany
    ("52", -480, -300), // Mexico
    ("54", -180, -180), // Argentina
    ("55", -300, -120), // Brazil
    ("61", 480, 630),   // Australia
    ("62", 420, 540),   // Indonesia
    ("63", 480, 480),   // Philippines
    ("64", 720, 720),   // New Zealand
    ("65", 480, 480),   // Singapore
    ("81", 540, 540),   // Japan
    ("82", 540, 540),   // South Korea
    ("86", 480, 480),   // China
    ("90", 180, 180),   // Turkey
    ("91", 330, 330),   // India
    ("234", 60, 60),    // Nigeria
    ("254", 180, 180),  // Kenya
    ("351", 0, 0),      // Portugal
    ("353", 0, 0),      // Ireland
    ("358", 120, 120),  // Finland
    ("966", 180, 180),  // Saudi Arabia
    ("971", 240, 240),  // United Arab Emirates
];

/// The offsets (minutes) of the recipient's zones, from an E.164 number.
pub fn offsets(destination: &str) -> (i32, i32) {
    let digits = destination.trim_start_matches('+');
    ZONES
        .iter()
        .filter(|(cc, _, _)| digits.starts_with(cc))
        .max_by_key(|(cc, _, _)| cc.len())
        .map_or((0, 0), |(_, lo, hi)| (*lo, *hi))
}

fn quiet_at(local_minute: i64, start_h: u32, end_h: u32) -> bool {
    let m = local_minute.rem_euclid(1440);
    let (s, e) = (i64::from(start_h) * 60, i64::from(end_h) * 60);
    if s <= e {
        (s..e).contains(&m)
    } else {
        m >= s || m < e
    }
}

/// If it is quiet for the recipient at `now_ms`, the first time (Unix ms, on a whole
/// minute) it no longer is in any of their zones; `None` when it is not quiet.
pub fn quiet_until(destination: &str, now_ms: i64, start_h: u32, end_h: u32) -> Option<i64> {
    if start_h == end_h {
        return None;
    }
    let (lo, hi) = offsets(destination);
    let quiet = |utc_minute: i64| {
        (lo..=hi)
            .step_by(30)
            .chain([hi])
            .any(|off| quiet_at(utc_minute + i64::from(off), start_h, end_h))
    };
    let minute = now_ms.div_euclid(60_000);
    if !quiet(minute) {
        return None;
    }
    (1..=2 * 1440)
        .map(|k| minute + k)
        .find(|m| !quiet(*m))
        .map(|m| m * 60_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;
    // 2026-11-26 00:00 UTC.
    const DAY: i64 = 1_795_651_200_000;

    #[test]
    fn london_is_quiet_from_21_to_8() {
        assert_eq!(quiet_until("+447911123456", DAY + 12 * H, 21, 8), None);
        assert_eq!(
            quiet_until("+447911123456", DAY + 22 * H, 21, 8),
            Some(DAY + 32 * H)
        );
        assert_eq!(
            quiet_until("+447911123456", DAY + 3 * H, 21, 8),
            Some(DAY + 8 * H)
        );
        assert_eq!(quiet_until("+447911123456", DAY + 8 * H, 21, 8), None);
    }

    #[test]
    fn the_recipients_zone_not_ours_decides() {
        // 12:00 UTC is 21:00 in Tokyo: quiet there until 08:00 JST = 23:00 UTC.
        assert_eq!(
            quiet_until("+81312345678", DAY + 12 * H, 21, 8),
            Some(DAY + 23 * H)
        );
        assert_eq!(quiet_until("+447911123456", DAY + 12 * H, 21, 8), None);
    }

    #[test]
    fn a_country_with_many_zones_waits_for_all_of_them() {
        // 13:00 UTC: 08:00 in New York (UTC-5) but 03:00 in Hawaii (UTC-10).
        let until = quiet_until("+12125551234", DAY + 13 * H, 21, 8).unwrap();
        assert_eq!(until, DAY + 18 * H, "08:00 in Hawaii");
        // 20:00 UTC: 15:00 in New York, 10:00 in Hawaii, 16:30 in Newfoundland.
        assert_eq!(quiet_until("+12125551234", DAY + 20 * H, 21, 8), None);
    }

    #[test]
    fn unknown_codes_use_utc_and_equal_hours_mean_never_quiet() {
        assert_eq!(offsets("+999123"), (0, 0));
        assert_eq!(
            quiet_until("+999123", DAY + 23 * H, 21, 8),
            Some(DAY + 32 * H)
        );
        assert_eq!(quiet_until("+447911123456", DAY + 23 * H, 8, 8), None);
    }
}
