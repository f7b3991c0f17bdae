//! CronJob schedules, pure and table-tested: the standard 5-field cron syntax with the
//! `@yearly`/`@annually`/`@monthly`/`@weekly`/`@daily`/`@midnight`/`@hourly` macros, a
//! `TZ=`/`CRON_TZ=` prefix or `spec.timeZone` (UTC otherwise), the times a schedule fires,
//! and which missed time to run (upstream's `mostRecentScheduleTime`).

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

/// More missed schedules than this are reported (`TooManyMissedTimes`) and only the latest runs.
pub const MAX_MISSED: usize = 100;

/// Why a schedule is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// The cron expression does not parse.
    #[error("unparseable schedule {0:?}: {1}")]
    Cron(String, String),
    /// The time zone is unknown.
    #[error("unknown time zone {0:?}")]
    TimeZone(String),
}

/// A parsed schedule in its time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    tz: Tz,
}

impl Schedule {
    /// Parses `schedule`, in `time_zone` (`spec.timeZone`, which wins over a `TZ=` prefix).
    pub fn parse(schedule: &str, time_zone: Option<&str>) -> Result<Self, ScheduleError> {
        let mut expr = schedule.trim();
        let mut zone = None;
        for prefix in ["CRON_TZ=", "TZ="] {
            if let Some(rest) = expr.strip_prefix(prefix) {
                let (z, tail) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
                zone = Some(z);
                expr = tail.trim();
            }
        }
        let zone = time_zone.or(zone).unwrap_or("UTC");
        let tz: Tz = zone
            .parse()
            .map_err(|_| ScheduleError::TimeZone(zone.to_string()))?;
        let expr = if expr.eq_ignore_ascii_case("@midnight") {
            "@daily"
        } else {
            expr
        };
        if expr.split_whitespace().count() != 5 && !expr.starts_with('@') {
            return Err(ScheduleError::Cron(
                schedule.into(),
                "expected exactly 5 fields".into(),
            ));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(expr)
            .map_err(|e| ScheduleError::Cron(schedule.into(), e.to_string()))?;
        Ok(Self { cron, tz })
    }

    /// The first time the schedule fires strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&t.with_timezone(&self.tz), false)
            .ok()
            .map(|z| z.with_timezone(&Utc))
    }

    /// The latest time the schedule fired at or before `t`.
    pub fn last_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_previous_occurrence(&t.with_timezone(&self.tz), true)
            .ok()
            .map(|z| z.with_timezone(&Utc))
    }

    /// The missed schedule to run now: the latest time in `(earliest, now]`, and how many
    /// there were (counted up to `MAX_MISSED + 1`).
    pub fn most_recent(
        &self,
        earliest: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> (Option<DateTime<Utc>>, usize) {
        let Some(first) = self.next_after(earliest).filter(|t| *t <= now) else {
            return (None, 0);
        };
        let mut count = 1;
        let mut t = first;
        while count <= MAX_MISSED {
            match self.next_after(t) {
                Some(n) if n <= now => {
                    count += 1;
                    t = n;
                }
                _ => break,
            }
        }
        let latest = self
            .last_at_or_before(now)
            .filter(|l| *l > earliest)
            .unwrap_or(t);
        (Some(latest), count)
    }
}

/// The earliest time to look for missed schedules from: the last schedule (or the CronJob's
/// creation), but no earlier than `startingDeadlineSeconds` before `now`.
pub fn earliest(
    last_schedule: Option<DateTime<Utc>>,
    created: DateTime<Utc>,
    starting_deadline: Option<i64>,
    now: DateTime<Utc>,
) -> DateTime<Utc> {
    let base = last_schedule.unwrap_or(created);
    match starting_deadline {
        Some(s) => base.max(now - chrono::Duration::seconds(s)),
        None => base,
    }
}

/// The Job name for a run scheduled at `t`: `<cronjob>-<minutes since the epoch>`.
pub fn job_name(cronjob: &str, t: DateTime<Utc>) -> String {
    format!("{cronjob}-{}", t.timestamp().div_euclid(60))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0)
            .single()
            .expect("time")
    }

    #[test]
    fn next_times_table() {
        // (schedule, timeZone, after, next)
        let cases = [
            (
                "*/1 * * * *",
                None,
                utc(2026, 1, 1, 10, 0),
                utc(2026, 1, 1, 10, 1),
            ),
            (
                "*/15 * * * *",
                None,
                utc(2026, 1, 1, 10, 7),
                utc(2026, 1, 1, 10, 15),
            ),
            (
                "@hourly",
                None,
                utc(2026, 1, 1, 10, 7),
                utc(2026, 1, 1, 11, 0),
            ),
            (
                "@daily",
                None,
                utc(2026, 1, 1, 10, 7),
                utc(2026, 1, 2, 0, 0),
            ),
            (
                "@midnight",
                None,
                utc(2026, 1, 1, 10, 7),
                utc(2026, 1, 2, 0, 0),
            ),
            (
                "@weekly",
                None,
                utc(2026, 1, 1, 10, 7),
                utc(2026, 1, 4, 0, 0),
            ),
            (
                "@monthly",
                None,
                utc(2026, 1, 1, 10, 7),
                utc(2026, 2, 1, 0, 0),
            ),
            (
                "@yearly",
                None,
                utc(2026, 1, 1, 10, 7),
                utc(2027, 1, 1, 0, 0),
            ),
            (
                "0 9 * * 1-5",
                None,
                utc(2026, 1, 2, 10, 0),
                utc(2026, 1, 5, 9, 0),
            ),
            // Day of month OR day of week, as Vixie cron and upstream.
            (
                "0 0 13 * 5",
                None,
                utc(2026, 1, 1, 0, 0),
                utc(2026, 1, 2, 0, 0),
            ),
            // Time zones: 09:00 in Berlin is 08:00 UTC in winter, 07:00 UTC in summer.
            (
                "0 9 * * *",
                Some("Europe/Berlin"),
                utc(2026, 1, 10, 12, 0),
                utc(2026, 1, 11, 8, 0),
            ),
            (
                "0 9 * * *",
                Some("Europe/Berlin"),
                utc(2026, 7, 10, 12, 0),
                utc(2026, 7, 11, 7, 0),
            ),
            (
                "TZ=Asia/Tokyo 30 6 * * *",
                None,
                utc(2026, 1, 1, 0, 0),
                utc(2026, 1, 1, 21, 30),
            ),
            (
                "CRON_TZ=America/New_York 0 12 * * *",
                None,
                utc(2026, 1, 1, 0, 0),
                utc(2026, 1, 1, 17, 0),
            ),
            // spec.timeZone wins over the prefix.
            (
                "TZ=Asia/Tokyo 0 12 * * *",
                Some("UTC"),
                utc(2026, 1, 1, 0, 0),
                utc(2026, 1, 1, 12, 0),
            ),
        ];
        for (i, (s, tz, after, want)) in cases.into_iter().enumerate() {
            let sched = Schedule::parse(s, tz).unwrap_or_else(|e| panic!("case {i}: {e}"));
            assert_eq!(sched.next_after(after), Some(want), "case {i}: {s}");
        }
    }

    #[test]
    fn dst_transition() {
        // Berlin springs forward on 2026-03-29 (02:00 → 03:00): a daily 09:00 run moves from
        // 08:00 UTC to 07:00 UTC across it, and consecutive runs are 23 hours apart.
        let s = Schedule::parse("0 9 * * *", Some("Europe/Berlin")).expect("parse");
        let a = s.next_after(utc(2026, 3, 28, 0, 0)).expect("a");
        let b = s.next_after(a).expect("b");
        assert_eq!(a, utc(2026, 3, 28, 8, 0));
        assert_eq!(b, utc(2026, 3, 29, 7, 0));
        // New York falls back on 2026-11-01: hourly runs stay one real hour apart.
        let h = Schedule::parse("0 * * * *", Some("America/New_York")).expect("parse");
        let mut t = utc(2026, 11, 1, 4, 30);
        for _ in 0..4 {
            let n = h.next_after(t).expect("next");
            assert!(n > t && n - t <= chrono::Duration::hours(1), "{t} -> {n}");
            t = n;
        }
    }

    #[test]
    fn bad_schedules() {
        assert!(matches!(
            Schedule::parse("* * * *", None),
            Err(ScheduleError::Cron(..))
        ));
        assert!(matches!(
            Schedule::parse("0 * * * * *", None),
            Err(ScheduleError::Cron(..))
        ));
        assert!(matches!(
            Schedule::parse("61 * * * *", None),
            Err(ScheduleError::Cron(..))
        ));
        assert!(matches!(
            Schedule::parse("* * * * *", Some("Mars/Olympus")),
            Err(ScheduleError::TimeZone(_))
        ));
    }

    #[test]
    fn missed_table() {
        let s = Schedule::parse("*/1 * * * *", None).expect("parse");
        let now = utc(2026, 1, 1, 10, 30);
        // (earliest, want latest, want count)
        let cases = [
            (utc(2026, 1, 1, 10, 30), None, 0),
            (utc(2026, 1, 1, 10, 29), Some(utc(2026, 1, 1, 10, 30)), 1),
            (utc(2026, 1, 1, 10, 25), Some(utc(2026, 1, 1, 10, 30)), 5),
            (
                utc(2026, 1, 1, 7, 0),
                Some(utc(2026, 1, 1, 10, 30)),
                MAX_MISSED + 1,
            ),
        ];
        for (i, (e, latest, count)) in cases.into_iter().enumerate() {
            assert_eq!(s.most_recent(e, now), (latest, count), "case {i}");
        }
        let hourly = Schedule::parse("@hourly", None).expect("parse");
        assert_eq!(hourly.most_recent(utc(2026, 1, 1, 10, 5), now), (None, 0));
    }

    #[test]
    fn starting_deadline_table() {
        let now = utc(2026, 1, 1, 10, 30);
        let created = utc(2026, 1, 1, 8, 0);
        let s = Schedule::parse("*/1 * * * *", None).expect("parse");
        // No deadline: from the last schedule.
        let e = earliest(Some(utc(2026, 1, 1, 10, 0)), created, None, now);
        assert_eq!(s.most_recent(e, now).1, 30);
        // A 200 s deadline: only the runs after 10:26:40 count (10:27 … 10:30).
        let e = earliest(Some(utc(2026, 1, 1, 10, 0)), created, Some(200), now);
        assert_eq!(e, utc(2026, 1, 1, 10, 26) + chrono::Duration::seconds(40));
        assert_eq!(s.most_recent(e, now), (Some(now), 4));
        // Never scheduled: from creation.
        let e = earliest(None, created, None, now);
        assert_eq!(s.most_recent(e, now).1, MAX_MISSED + 1);
        // An hourly schedule whose only miss is older than the deadline is skipped.
        let h = Schedule::parse("@hourly", None).expect("parse");
        let e = earliest(Some(utc(2026, 1, 1, 9, 0)), created, Some(60), now);
        assert_eq!(h.most_recent(e, now), (None, 0));
    }

    #[test]
    fn names() {
        assert_eq!(job_name("hello", utc(2026, 1, 1, 10, 30)), "hello-29454390");
    }
}
