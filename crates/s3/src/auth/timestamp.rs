//! SigV4's timestamp, `yyyymmddThhmmssZ` (UTC), read without a date library: every signed
//! request has one.

use std::time::{Duration, SystemTime};

/// `yyyymmddThhmmssZ` (UTC) to a time; `None` unless every field is in range. Written out
/// rather than through a date library: every signed request parses one.
pub(super) fn parse_timestamp(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let number = |at: std::ops::Range<usize>| {
        b[at]
            .iter()
            .try_fold(0u32, |n, &c| c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0')))
    };
    let (year, month, day) = (number(0..4)?, number(4..6)?, number(6..8)?);
    let (hour, minute, second) = (number(9..11)?, number(11..13)?, number(13..15)?);
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        1..=12 => 31,
        _ => return None,
    };
    if day == 0 || day > month_days || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let seconds = days_from_civil(year, month, day) * 86_400 + i64::from(hour * 3600 + minute * 60 + second);
    let since_epoch = Duration::from_secs(seconds.unsigned_abs());
    match seconds >= 0 {
        true => SystemTime::UNIX_EPOCH.checked_add(since_epoch),
        false => SystemTime::UNIX_EPOCH.checked_sub(since_epoch),
    }
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar (Howard Hinnant's
/// `days_from_civil`: years counted from March, so that the leap day ends the year).
fn days_from_civil(year: u32, month: u32, day: u32) -> i64 {
    let y = i64::from(year) - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let month_from_march = i64::from((month + 9) % 12);
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse_to_the_second() {
        let t = parse_timestamp("20240229T235959Z").unwrap();
        assert_eq!(
            t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(),
            1_709_251_199
        );
        let epoch = parse_timestamp("19700101T000000Z").unwrap();
        assert_eq!(epoch, SystemTime::UNIX_EPOCH);
        let before = SystemTime::UNIX_EPOCH.duration_since(parse_timestamp("19691231T235959Z").unwrap());
        assert_eq!(before.unwrap().as_secs(), 1);
        for bad in [
            "20230229T000000Z",
            "21000229T000000Z",
            "20241329T000000Z",
            "20240431T000000Z",
            "20240101T240000Z",
            "20240101T236000Z",
            "20240101T235960Z",
            "+2024101T235959Z",
            "2024022T235959Z",
            "20240229 235959Z",
            "2024022éT23595Z",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
    }

    proptest::proptest! {
        #[test]
        fn timestamps_parse_as_the_time_crate_does(
            (y, mo, d, h, mi, s) in (0u32..10_000, 0u32..14, 0u32..33, 0u32..26, 0u32..62, 0u32..62)
        ) {
            let text = format!("{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}Z");
            const FORMAT: &[time::format_description::BorrowedFormatItem<'_>] =
                time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
            let theirs = time::PrimitiveDateTime::parse(&text, FORMAT).ok().map(|t| SystemTime::from(t.assume_utc()));
            proptest::prop_assert_eq!(parse_timestamp(&text), theirs, "{}", text);
        }
    }
}
