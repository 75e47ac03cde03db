//! Times as images write them: RFC 3339 in UTC, whole seconds
//! (`2023-11-14T22:13:20Z`), as the `created` fields of configs and history
//! entries hold them, with `SOURCE_DATE_EPOCH` honoured for reproducible
//! images.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SSZ` (proleptic
/// Gregorian calendar, UTC; negative seconds are before 1970).
pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `SOURCE_DATE_EPOCH` (seconds since the epoch), when it is set to a
/// number: the time a reproducible build stamps on what it makes.
pub fn source_date_epoch() -> Option<i64> {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
}

/// Now as seconds since the epoch (0 for a clock set before 1970).
pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The `created` time of something made now: [`source_date_epoch`] when
/// set, else the clock, as [`rfc3339`].
pub fn created_now() -> String {
    rfc3339(source_date_epoch().unwrap_or_else(now_secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_of_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
        assert_eq!(rfc3339(253_402_300_799), "9999-12-31T23:59:59Z");
    }

    #[test]
    fn created_now_honours_source_date_epoch() {
        std::env::set_var("SOURCE_DATE_EPOCH", "951782400"); // 2000-02-29
        assert_eq!(created_now(), "2000-02-29T00:00:00Z");
        std::env::set_var("SOURCE_DATE_EPOCH", " 1700000000\n");
        assert_eq!(created_now(), "2023-11-14T22:13:20Z");
        std::env::remove_var("SOURCE_DATE_EPOCH");
        assert!(created_now().as_str() > "2026-01-01");
    }

    /// Every day of 1600..=2400 (leap centuries and all), against a
    /// calendar counted day by day.
    #[test]
    fn rfc3339_matches_a_day_by_day_calendar() {
        let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let mut days: i64 = 0;
        // Days from 1600-01-01 to 1970-01-01.
        for y in 1600..1970 {
            days -= if leap(y) { 366 } else { 365 };
        }
        for year in 1600..=2400i64 {
            for month in 1..=12i64 {
                let len = match month {
                    2 if leap(year) => 29,
                    2 => 28,
                    4 | 6 | 9 | 11 => 30,
                    _ => 31,
                };
                for day in 1..=len {
                    let secs = days * 86_400 + 3_723;
                    assert_eq!(
                        rfc3339(secs),
                        format!("{year:04}-{month:02}-{day:02}T01:02:03Z")
                    );
                    days += 1;
                }
            }
        }
    }
}
