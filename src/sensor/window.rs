//! A time-of-day window (`start`–`stop` in an IANA time zone), shared by the
//! native `timeOfDay` filter and Argo's `filters.time` (ARGO-COMPAT §4.4,
//! upstream `pkg/shared/util/time.go`): both read the event's time, to the
//! second, on its calendar day in the zone.

use chrono::{NaiveTime, TimeZone, Timelike};

/// A compiled window.
#[derive(Debug, Clone, PartialEq)]
pub struct TimeOfDay {
    start: NaiveTime,
    stop: NaiveTime,
    tz: chrono_tz::Tz,
}

/// What is wrong with a window as written: `(field, reason)`.
pub type WindowError = (&'static str, String);

impl TimeOfDay {
    /// `start`/`stop` as `H:MM:SS` (or `HH:MM:SS`), `timezone` IANA (none
    /// or empty: UTC). `start == stop` is refused: upstream's window would
    /// never pass, which is never what was meant.
    pub fn parse(start: &str, stop: &str, timezone: Option<&str>) -> Result<Self, WindowError> {
        let parse = |s: &str, field: &'static str| {
            NaiveTime::parse_from_str(s, "%H:%M:%S")
                .map_err(|_| (field, format!("`{s}` is not H:MM:SS")))
        };
        let (start, stop) = (parse(start, "start")?, parse(stop, "stop")?);
        if start == stop {
            return Err(("stop", "start and stop are the same".into()));
        }
        let tz = match timezone {
            None | Some("") => chrono_tz::UTC,
            Some(name) => name
                .parse()
                .map_err(|_| ("timezone", format!("`{name}` is not an IANA time zone")))?,
        };
        Ok(TimeOfDay { start, stop, tz })
    }

    /// Whether `time` (RFC 3339) falls in the window, with the local time
    /// of day it was (to the second). `start < stop`: `start ≤ t < stop`;
    /// `stop < start` wraps midnight: `t ≥ start || t < stop`.
    pub fn check(&self, time: &str) -> Result<(bool, NaiveTime), String> {
        let instant = chrono::DateTime::parse_from_rfc3339(time)
            .map_err(|_| format!("the event time `{time}` is not RFC 3339"))?;
        let local = self.tz.from_utc_datetime(&instant.naive_utc()).time();
        let local =
            NaiveTime::from_hms_opt(local.hour(), local.minute(), local.second()).unwrap_or(local);
        let inside = if self.start < self.stop {
            self.start <= local && local < self.stop
        } else {
            local >= self.start || local < self.stop
        };
        Ok((inside, local))
    }

    /// `02:30:00–04:30:00 Europe/Berlin`, for explanations.
    pub fn describe(&self) -> String {
        format!("{}–{} {}", self.start, self.stop, self.tz)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inside(w: &TimeOfDay, t: &str) -> bool {
        w.check(t).unwrap().0
    }

    #[test]
    fn plain_and_midnight_wrapping_windows() {
        let w = TimeOfDay::parse("02:30:00", "04:30:00", None).unwrap();
        assert!(!inside(&w, "2026-11-30T02:29:59.999Z"));
        assert!(inside(&w, "2026-11-30T02:30:00Z"));
        assert!(inside(&w, "2026-11-30T04:29:59.999Z"));
        assert!(!inside(&w, "2026-11-30T04:30:00Z"));
        // Upstream's example: 23:34:05–00:24:05 passes 23:50 and 00:10, not 00:30.
        let w = TimeOfDay::parse("23:34:05", "00:24:05", None).unwrap();
        assert!(inside(&w, "2026-11-30T23:50:00Z"));
        assert!(inside(&w, "2026-11-30T00:10:00Z"));
        assert!(!inside(&w, "2026-11-30T00:30:00Z"));
    }

    #[test]
    fn zones_and_offsets() {
        let w = TimeOfDay::parse("09:00:00", "17:00:00", Some("Europe/Berlin")).unwrap();
        // 08:30 UTC is 09:30 in Berlin in winter; 16:30 UTC is 17:30.
        assert!(inside(&w, "2026-11-30T08:30:00Z"));
        assert!(!inside(&w, "2026-11-30T16:30:00Z"));
        // A time with an offset means the same instant.
        assert!(inside(&w, "2026-11-30T10:30:00+02:00"));
        assert_eq!(
            w.check("2026-11-30T08:30:00Z").unwrap().1.to_string(),
            "09:30:00"
        );
    }

    #[test]
    fn bad_windows_and_times_are_named() {
        assert_eq!(
            TimeOfDay::parse("2:30", "04:30:00", None).unwrap_err().0,
            "start"
        );
        assert_eq!(
            TimeOfDay::parse("02:30:00", "25:00:00", None)
                .unwrap_err()
                .0,
            "stop"
        );
        assert_eq!(
            TimeOfDay::parse("01:00:00", "01:00:00", None)
                .unwrap_err()
                .0,
            "stop"
        );
        assert_eq!(
            TimeOfDay::parse("01:00:00", "02:00:00", Some("Mars/Olympus"))
                .unwrap_err()
                .0,
            "timezone"
        );
        let w = TimeOfDay::parse("01:00:00", "02:00:00", None).unwrap();
        assert!(w.check("yesterday").unwrap_err().contains("not RFC 3339"));
    }
}
