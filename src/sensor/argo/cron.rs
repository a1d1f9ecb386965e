//! `conditionsReset[].byTime` (ARGO-COMPAT R5.4): a 5-field cron (minute
//! hour day-of-month month day-of-week; `*`, lists, ranges, steps; no `@`
//! descriptors) in a time zone. A trigger's stored events are cleared at each
//! tick; tripline applies it lazily: an event stored before the latest tick
//! is gone when the trigger is next offered an event.

use chrono::{DateTime, Datelike, Duration, TimeZone, Timelike, Utc};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResetSpec {
    #[serde(default)]
    pub by_time: Option<ByTime>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ByTime {
    pub cron: String,
    #[serde(default)]
    pub timezone: Option<String>,
}

/// A compiled reset schedule.
#[derive(Debug, Clone)]
pub struct Cron {
    minutes: Vec<bool>,
    hours: Vec<bool>,
    days: Vec<bool>,
    months: Vec<bool>,
    weekdays: Vec<bool>,
    /// Both day fields restricted: a day matches either (cron's rule).
    day_or: bool,
    tz: chrono_tz::Tz,
    text: String,
}

fn field(src: &str, min: u32, max: u32, name: &str) -> Result<(Vec<bool>, bool), String> {
    let mut set = vec![false; (max + 1) as usize];
    let star = src == "*";
    for part in src.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (
                r,
                s.parse::<u32>()
                    .map_err(|_| format!("{name}: bad step `{s}`"))?,
            ),
            None => (part, 1),
        };
        if step == 0 {
            return Err(format!("{name}: step 0"));
        }
        let (lo, hi) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            let p = |x: &str| {
                x.parse::<u32>()
                    .map_err(|_| format!("{name}: `{x}` is not a number"))
            };
            (p(a)?, p(b)?)
        } else {
            let v = range
                .parse::<u32>()
                .map_err(|_| format!("{name}: `{range}` is not a number"))?;
            (v, if part.contains('/') { max } else { v })
        };
        let hi = if name == "day of week" && hi == 7 {
            6
        } else {
            hi
        };
        let lo = if name == "day of week" && lo == 7 {
            0
        } else {
            lo
        };
        if lo < min || hi > max || lo > hi {
            return Err(format!("{name}: `{range}` is outside {min}-{max}"));
        }
        for v in (lo..=hi).step_by(step as usize) {
            set[v as usize] = true;
        }
    }
    Ok((set, star))
}

impl Cron {
    pub fn parse(spec: &ByTime) -> Result<Cron, String> {
        if spec.cron.trim_start().starts_with('@') {
            return Err(format!(
                "`{}`: descriptors are not enabled upstream; use 5 fields",
                spec.cron
            ));
        }
        let f: Vec<&str> = spec.cron.split_whitespace().collect();
        if f.len() != 5 {
            return Err(format!(
                "`{}`: 5 fields (minute hour day-of-month month day-of-week)",
                spec.cron
            ));
        }
        let (minutes, _) = field(f[0], 0, 59, "minute")?;
        let (hours, _) = field(f[1], 0, 23, "hour")?;
        let (days, dom_star) = field(f[2], 1, 31, "day of month")?;
        let (months, _) = field(f[3], 1, 12, "month")?;
        let (weekdays, dow_star) = field(f[4], 0, 7, "day of week")?;
        let tz = match spec.timezone.as_deref() {
            None | Some("") => chrono_tz::UTC,
            Some(t) => t
                .parse()
                .map_err(|_| format!("`{t}` is not an IANA time zone"))?,
        };
        Ok(Cron {
            minutes,
            hours,
            days,
            months,
            weekdays,
            day_or: !dom_star && !dow_star,
            tz,
            text: format!("{} ({tz})", spec.cron),
        })
    }

    fn matches<T: TimeZone>(&self, t: &DateTime<T>) -> bool {
        let dom = self.days[t.day() as usize];
        let dow = self.weekdays[t.weekday().num_days_from_sunday() as usize];
        let day = if self.day_or { dom || dow } else { dom && dow };
        self.minutes[t.minute() as usize]
            && self.hours[t.hour() as usize]
            && self.months[t.month() as usize]
            && day
    }

    /// Whether a tick falls in `(after, until]` (unix milliseconds).
    pub fn ticked_between(&self, after_ms: u64, until_ms: u64) -> bool {
        if until_ms <= after_ms {
            return false;
        }
        let Some(start) = Utc.timestamp_millis_opt(after_ms as i64).single() else {
            return false;
        };
        // From the minute after `after`, minute by minute in the zone,
        // skipping whole hours and days that cannot match. Bounded: a
        // schedule fires within a few years or never.
        let mut t = start
            .with_timezone(&self.tz)
            .with_second(0)
            .and_then(|t| t.with_nanosecond(0))
            .unwrap_or(start.with_timezone(&self.tz))
            + Duration::minutes(1);
        let until = Utc
            .timestamp_millis_opt(until_ms as i64)
            .single()
            .unwrap_or(start);
        let mut steps = 0;
        while t.with_timezone(&Utc) <= until && steps < 2_000_000 {
            steps += 1;
            let day_ok = {
                let dom = self.days[t.day() as usize];
                let dow = self.weekdays[t.weekday().num_days_from_sunday() as usize];
                (if self.day_or { dom || dow } else { dom && dow })
                    && self.months[t.month() as usize]
            };
            if !day_ok {
                let next_day = (t + Duration::days(1)).date_naive().and_hms_opt(0, 0, 0);
                t = match next_day.and_then(|d| self.tz.from_local_datetime(&d).earliest()) {
                    Some(n) => n,
                    None => t + Duration::hours(1),
                };
                continue;
            }
            if !self.hours[t.hour() as usize] {
                t = t.with_minute(0).unwrap_or(t) + Duration::hours(1);
                continue;
            }
            if self.matches(&t) {
                return true;
            }
            t += Duration::minutes(1);
        }
        false
    }

    pub fn text(&self) -> &str {
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> u64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis() as u64
    }

    fn cron(c: &str, tz: Option<&str>) -> Cron {
        Cron::parse(&ByTime {
            cron: c.into(),
            timezone: tz.map(str::to_string),
        })
        .unwrap()
    }

    #[test]
    fn ticks_in_a_time_zone() {
        // 23:59 in Los Angeles is 07:59 UTC (winter).
        let c = cron("59 23 * * *", Some("America/Los_Angeles"));
        assert!(c.ticked_between(ms("2026-11-30T07:00:00Z"), ms("2026-11-30T08:00:00Z")));
        assert!(!c.ticked_between(ms("2026-11-30T08:00:00Z"), ms("2026-12-01T07:58:00Z")));
        assert!(c.ticked_between(ms("2026-11-30T08:00:00Z"), ms("2026-12-01T07:59:00Z")));
        let every5 = cron("*/5 * * * *", None);
        assert!(every5.ticked_between(ms("2026-11-30T10:01:00Z"), ms("2026-11-30T10:05:00Z")));
        assert!(!every5.ticked_between(ms("2026-11-30T10:01:00Z"), ms("2026-11-30T10:04:59Z")));
        let mondays = cron("0 9 * * 1", None);
        assert!(mondays.ticked_between(ms("2026-11-29T00:00:00Z"), ms("2026-11-30T09:00:00Z")));
        assert!(Cron::parse(&ByTime {
            cron: "@daily".into(),
            timezone: None
        })
        .is_err());
        assert!(Cron::parse(&ByTime {
            cron: "61 * * * *".into(),
            timezone: None
        })
        .is_err());
    }
}
