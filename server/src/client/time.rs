//! The one time format of the command line: UTC to the second
//! (`2026-12-07 03:04:05 UTC`), with how far it is from now where that
//! helps (`2026-12-07 03:04:05 UTC (in 4 min)`, `(4 min ago)`).

use chrono::{DateTime, Utc};

/// `at` as `2026-12-07 03:04:05 UTC`; with `now`, followed by how far
/// from it: `(in 4 min)`, `(4 min ago)`, `(now)`. Every time the CLI
/// prints goes through here.
pub fn format_time(at: DateTime<Utc>, now: Option<DateTime<Utc>>) -> String {
    let absolute = at.format("%Y-%m-%d %H:%M:%S UTC").to_string();
    match now {
        None => absolute,
        Some(now) => {
            let seconds = (at - now).num_seconds();
            let relative = match seconds {
                0 => "now".to_owned(),
                s if s > 0 => format!("in {}", rough(s.unsigned_abs())),
                s => format!("{} ago", rough(s.unsigned_abs())),
            };
            format!("{absolute} ({relative})")
        }
    }
}

/// A duration as the web app writes it, to the largest useful unit:
/// `45 s`, `4 min`, `3 h 20 min`, `2 days 3 h`.
pub fn rough(seconds: u64) -> String {
    let minutes = seconds / 60;
    let hours = minutes / 60;
    let days = hours / 24;
    if seconds < 60 {
        format!("{seconds} s")
    } else if minutes < 60 {
        format!("{minutes} min")
    } else if hours < 48 {
        match minutes % 60 {
            0 => format!("{hours} h"),
            rest => format!("{hours} h {rest} min"),
        }
    } else {
        match hours % 24 {
            0 => format!("{days} days"),
            rest => format!("{days} days {rest} h"),
        }
    }
}

/// Reads a point in time as people type it on the command line: `now`,
/// `45m ago`, `2h30m ago` (humantime durations), or an absolute UTC time
/// (`2026-12-07T01:02:03Z`, `2026-12-07 01:02:03`, `2026-12-07 01:02`,
/// with or without a trailing `UTC`/`Z`).
pub fn parse_time(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("now") {
        return Ok(now);
    }
    if let Some(ago) = text.strip_suffix("ago") {
        let duration = humantime::parse_duration(ago.trim())
            .map_err(|error| format!("`{text}`: {error} (try `45m ago`)"))?;
        let duration = chrono::Duration::from_std(duration)
            .map_err(|_| format!("`{text}` is too long ago"))?;
        return Ok(now - duration);
    }
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    let bare = text
        .strip_suffix("UTC")
        .or_else(|| text.strip_suffix('Z'))
        .unwrap_or(text)
        .trim();
    for format in [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(at) = chrono::NaiveDateTime::parse_from_str(bare, format) {
            return Ok(at.and_utc());
        }
    }
    Err(format!(
        "cannot read `{text}` as a time: give a UTC time (`2026-12-07 01:02:03`), `now`, or how long ago (`45m ago`)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("test time")
            .with_timezone(&Utc)
    }

    #[test]
    fn times_are_utc_to_the_second_with_the_distance_from_now() {
        let now = at("2026-12-07T03:04:05Z");
        assert_eq!(format_time(now, None), "2026-12-07 03:04:05 UTC");
        assert_eq!(format_time(now, Some(now)), "2026-12-07 03:04:05 UTC (now)");
        let later = at("2026-12-07T03:08:05Z");
        assert_eq!(
            format_time(later, Some(now)),
            "2026-12-07 03:08:05 UTC (in 4 min)"
        );
        assert_eq!(
            format_time(now, Some(later)),
            "2026-12-07 03:04:05 UTC (4 min ago)"
        );
        // A time zone other than UTC is shown in UTC.
        let paris = DateTime::parse_from_rfc3339("2026-12-07T04:04:05+01:00").expect("time");
        assert_eq!(
            format_time(paris.with_timezone(&Utc), None),
            "2026-12-07 03:04:05 UTC"
        );
    }

    #[test]
    fn durations_read_like_the_web_app() {
        let cases = [
            (0, "0 s"),
            (45, "45 s"),
            (60, "1 min"),
            (4 * 60 + 59, "4 min"),
            (3_600, "1 h"),
            (3 * 3_600 + 20 * 60, "3 h 20 min"),
            (47 * 3_600, "47 h"),
            (50 * 3_600, "2 days 2 h"),
            (72 * 3_600, "3 days"),
        ];
        for (seconds, text) in cases {
            assert_eq!(rough(seconds), text, "{seconds} s");
        }
    }

    #[test]
    fn times_are_read_as_typed() {
        let now = at("2026-12-07T03:04:05Z");
        assert_eq!(parse_time("now", now), Ok(now));
        assert_eq!(parse_time("45m ago", now), Ok(at("2026-12-07T02:19:05Z")));
        assert_eq!(
            parse_time("1h 30m ago", now),
            Ok(at("2026-12-07T01:34:05Z"))
        );
        for text in [
            "2026-12-07T01:02:03Z",
            "2026-12-07T02:02:03+01:00",
            "2026-12-07 01:02:03",
            "2026-12-07 01:02:03 UTC",
            "2026-12-07T01:02:03",
        ] {
            assert_eq!(
                parse_time(text, now),
                Ok(at("2026-12-07T01:02:03Z")),
                "{text}"
            );
        }
        assert_eq!(
            parse_time("2026-12-07 01:02", now),
            Ok(at("2026-12-07T01:02:00Z"))
        );
        let error = parse_time("yesterday-ish", now).expect_err("not a time");
        assert!(
            error.contains("`yesterday-ish`") && error.contains("45m ago"),
            "{error}"
        );
        assert!(parse_time("soon ago", now).is_err());
    }
}
