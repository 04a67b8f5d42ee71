//! Schedules of `schedule:` triggers: five-field cron expressions in a time
//! zone, and fixed rates.
//!
//! A schedule is a sequence of *slots*, instants at which it fires; what
//! fires once per slot is decided by the server, which only asks for the
//! next slot after an instant. Cron slots are local times in the
//! schedule's zone: a local time skipped by a daylight-saving change fires
//! at the first instant after the gap, and one that happens twice fires
//! once, at its first occurrence. Rates are counted from the Unix epoch,
//! so every node and every restart agrees on their slots.

use std::fmt;
use std::time::Duration;

use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;

/// How far ahead a slot is looked for: an expression such as `0 0 30 2 *`
/// (30 February) never fires and is refused.
const HORIZON_DAYS: i32 = 5 * 366;

/// A parsed schedule.
#[derive(Clone)]
pub struct Schedule {
    kind: Kind,
    zone: TimeZone,
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Schedule")
            .field("kind", &self.kind)
            .field("zone", &self.zone.iana_name())
            .finish()
    }
}

#[derive(Debug, Clone)]
enum Kind {
    Cron(Cron),
    /// Every this many milliseconds.
    Rate(i64),
}

/// Bit sets of the values each field allows.
#[derive(Debug, Clone)]
struct Cron {
    minutes: u64,
    hours: u32,
    /// Bits 1 to 31.
    days: u32,
    /// Bits 1 to 12.
    months: u16,
    /// Bits 0 (Sunday) to 6.
    weekdays: u8,
    /// Whether day-of-month and day-of-week were `*`: when both are
    /// restricted a day matching either fires, as in every cron.
    any_day: bool,
    any_weekday: bool,
}

/// Why an expression or zone was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("{0}")]
    Expression(String),
    #[error("unknown time zone {0:?}")]
    Zone(String),
}

impl Schedule {
    /// Parses `expression` (five cron fields, an `@daily`-style macro, or
    /// `rate(N unit)`) in the IANA time zone `zone`.
    pub fn parse(expression: &str, zone: &str) -> Result<Schedule, ScheduleError> {
        let zone = TimeZone::get(zone).map_err(|_| ScheduleError::Zone(zone.to_owned()))?;
        let expression = expression.trim();
        let kind = if let Some(rate) = expression
            .strip_prefix("rate(")
            .and_then(|r| r.strip_suffix(')'))
        {
            Kind::Rate(parse_rate(rate)?)
        } else {
            Kind::Cron(Cron::parse(expression)?)
        };
        let schedule = Schedule { kind, zone };
        if schedule.next_after(0).is_none() {
            return Err(ScheduleError::Expression(format!(
                "{expression:?} names no date that exists (such as 30 February)"
            )));
        }
        Ok(schedule)
    }

    /// The first slot strictly after `after_ms` (Unix milliseconds), or
    /// `None` if there is none within five years.
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        match &self.kind {
            Kind::Rate(every) => Some((after_ms.div_euclid(*every) + 1) * every),
            Kind::Cron(cron) => cron.next_after(after_ms, &self.zone),
        }
    }

    /// The last slot at or before `at_ms`, if there is one within five years.
    pub fn last_at_or_before(&self, at_ms: i64) -> Option<i64> {
        match &self.kind {
            Kind::Rate(every) => Some(at_ms.div_euclid(*every) * every),
            Kind::Cron(cron) => cron.last_at_or_before(at_ms, &self.zone),
        }
    }
}

fn parse_rate(rate: &str) -> Result<i64, ScheduleError> {
    let bad = || {
        ScheduleError::Expression(format!(
            "rate({rate}) is not a rate; write rate(N unit) with unit seconds, minutes, hours or days, such as rate(5 minutes)"
        ))
    };
    let (n, unit) = rate.trim().split_once(' ').ok_or_else(bad)?;
    let n: i64 = n.trim().parse().map_err(|_| bad())?;
    let unit_ms = match unit.trim() {
        "second" | "seconds" => 1000,
        "minute" | "minutes" => 60_000,
        "hour" | "hours" => 3_600_000,
        "day" | "days" => 86_400_000,
        _ => return Err(bad()),
    };
    if !(1..=365 * 86_400_000 / unit_ms).contains(&n) {
        return Err(ScheduleError::Expression(format!(
            "rate({rate}) is out of range: from one second to a year"
        )));
    }
    Ok(n * unit_ms)
}

impl Cron {
    fn parse(expression: &str) -> Result<Cron, ScheduleError> {
        let expanded = match expression {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            other => other,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(ScheduleError::Expression(format!(
                "{expression:?} has {} fields; a cron expression has five: minute hour day-of-month month day-of-week, such as \"0 3 * * *\" (03:00 every day), or write rate(5 minutes)",
                fields.len()
            )));
        }
        let minutes = field(fields[0], "minute", 0, 59, &[])?;
        let hours = field(fields[1], "hour", 0, 23, &[])?;
        let days = field(fields[2], "day of month", 1, 31, &[])?;
        let months = field(fields[3], "month", 1, 12, &MONTHS)?;
        // 7 is Sunday too.
        let mut weekdays = field(fields[4], "day of week", 0, 7, &WEEKDAYS)?;
        if weekdays & (1 << 7) != 0 {
            weekdays |= 1;
        }
        Ok(Cron {
            minutes,
            hours: hours as u32,
            days: days as u32,
            months: months as u16,
            weekdays: (weekdays & 0x7f) as u8,
            any_day: fields[2] == "*" || fields[2] == "?",
            any_weekday: fields[4] == "*" || fields[4] == "?",
        })
    }

    fn day_matches(&self, date: Date) -> bool {
        if self.months & (1 << date.month()) == 0 {
            return false;
        }
        let day = self.days & (1 << date.day()) != 0;
        let weekday = self.weekdays & (1 << date.weekday().to_sunday_zero_offset()) != 0;
        match (self.any_day, self.any_weekday) {
            (false, false) => day || weekday,
            _ => day && weekday,
        }
    }

    /// The instants of the slots of a local day that matches, in no
    /// particular order (a gap's shifted times can come out of order).
    fn slots_on(&self, date: Date, zone: &TimeZone) -> impl Iterator<Item = i64> + '_ {
        let zone = zone.clone();
        (0..24i8)
            .filter(|h| self.hours & (1 << h) != 0)
            .flat_map(move |hour| {
                (0..60i8)
                    .filter(|m| self.minutes & (1 << m) != 0)
                    .map(move |minute| date.at(hour, minute, 0, 0))
            })
            .filter_map(move |local| {
                let zoned = zone.to_ambiguous_zoned(local).compatible().ok()?;
                Some(zoned.timestamp().as_millisecond())
            })
    }

    fn next_after(&self, after_ms: i64, zone: &TimeZone) -> Option<i64> {
        let after = Timestamp::from_millisecond(after_ms).ok()?;
        // From the day before: a gap's shifted times can cross midnight.
        let mut date = after.to_zoned(zone.clone()).date().yesterday().ok()?;
        for _ in 0..HORIZON_DAYS {
            if self.day_matches(date)
                && let Some(slot) = self.slots_on(date, zone).filter(|s| *s > after_ms).min()
            {
                return Some(slot);
            }
            date = date.tomorrow().ok()?;
        }
        None
    }

    fn last_at_or_before(&self, at_ms: i64, zone: &TimeZone) -> Option<i64> {
        let at = Timestamp::from_millisecond(at_ms).ok()?;
        let mut date = at.to_zoned(zone.clone()).date().tomorrow().ok()?;
        for _ in 0..HORIZON_DAYS {
            if self.day_matches(date)
                && let Some(slot) = self.slots_on(date, zone).filter(|s| *s <= at_ms).max()
            {
                return Some(slot);
            }
            date = date.yesterday().ok()?;
        }
        None
    }
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// One cron field: `*`, `N`, `A-B`, any of them `/STEP`, in a list.
/// `names` are accepted for values from `min` (months, weekdays).
fn field(text: &str, what: &str, min: u32, max: u32, names: &[&str]) -> Result<u64, ScheduleError> {
    let bad = |why: String| ScheduleError::Expression(format!("{what} field {text:?}: {why}"));
    let value = |v: &str| -> Result<u32, ScheduleError> {
        if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(v)) {
            return Ok(min + i as u32);
        }
        let n: u32 = v
            .parse()
            .map_err(|_| bad(format!("{v:?} is not a number")))?;
        if n < min || n > max {
            return Err(bad(format!("{n} is outside {min}-{max}")));
        }
        Ok(n)
    };
    let mut bits = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step
                    .parse()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| bad(format!("step {step:?} is not a positive number")))?;
                (range, step)
            }
            None => (part, 1),
        };
        let (from, to) = if range == "*" || range == "?" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (value(a)?, value(b)?);
            if a > b {
                return Err(bad(format!("the range {range} runs backwards")));
            }
            (a, b)
        } else {
            let a = value(range)?;
            // `5/15` means from 5 to the end in steps of 15.
            (a, if step > 1 { max } else { a })
        };
        for v in (from..=to).step_by(step as usize) {
            bits |= 1 << v;
        }
    }
    Ok(bits)
}

impl Schedule {
    /// A schedule's slot period, for a rate; cron schedules have none.
    pub fn rate(&self) -> Option<Duration> {
        match self.kind {
            Kind::Rate(ms) => Some(Duration::from_millis(ms as u64)),
            Kind::Cron(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(text: &str) -> i64 {
        text.parse::<Timestamp>().unwrap().as_millisecond()
    }

    fn iso(ms: i64) -> String {
        Timestamp::from_millisecond(ms).unwrap().to_string()
    }

    fn next(expr: &str, zone: &str, after: &str) -> String {
        iso(Schedule::parse(expr, zone)
            .unwrap()
            .next_after(ms(after))
            .unwrap())
    }

    #[test]
    fn daily_in_a_zone() {
        // 03:00 in Shanghai is 19:00 UTC the day before.
        assert_eq!(
            next("0 3 * * *", "Asia/Shanghai", "2026-01-01T00:00:00Z"),
            "2026-01-01T19:00:00Z"
        );
        assert_eq!(
            next("0 3 * * *", "UTC", "2026-01-01T03:00:00Z"),
            "2026-01-02T03:00:00Z"
        );
    }

    #[test]
    fn steps_lists_ranges_and_names() {
        assert_eq!(
            next("*/15 * * * *", "UTC", "2026-01-01T00:07:00Z"),
            "2026-01-01T00:15:00Z"
        );
        assert_eq!(
            next("0 9-17/4 * * MON-FRI", "UTC", "2026-01-02T17:30:00Z"),
            // 2 January 2026 is a Friday: next is Monday 5 January, 09:00.
            "2026-01-05T09:00:00Z"
        );
        assert_eq!(
            next("30 12 1,15 FEB *", "UTC", "2026-02-01T12:30:00Z"),
            "2026-02-15T12:30:00Z"
        );
        assert_eq!(
            next("0 0 * * 7", "UTC", "2026-01-01T00:00:00Z"),
            "2026-01-04T00:00:00Z"
        );
    }

    #[test]
    fn day_of_month_or_day_of_week_when_both_are_given() {
        // The 13th, or any Friday: 2 January 2026 is a Friday.
        assert_eq!(
            next("0 0 13 * 5", "UTC", "2026-01-01T00:00:00Z"),
            "2026-01-02T00:00:00Z"
        );
    }

    #[test]
    fn daylight_saving_gaps_fire_after_and_folds_fire_once() {
        // Berlin skips 02:00-03:00 on 29 March 2026: 02:30 fires at 03:30 CEST.
        assert_eq!(
            next("30 2 * * *", "Europe/Berlin", "2026-03-29T00:00:00Z"),
            "2026-03-29T01:30:00Z"
        );
        // 02:30 happens twice on 25 October 2026; it fires at the first.
        let schedule = Schedule::parse("30 2 * * *", "Europe/Berlin").unwrap();
        let first = schedule.next_after(ms("2026-10-24T12:00:00Z")).unwrap();
        assert_eq!(iso(first), "2026-10-25T00:30:00Z");
        let second = schedule.next_after(first).unwrap();
        assert_eq!(iso(second), "2026-10-26T01:30:00Z");
    }

    #[test]
    fn rates_are_counted_from_the_epoch() {
        let schedule = Schedule::parse("rate(5 minutes)", "UTC").unwrap();
        assert_eq!(
            iso(schedule.next_after(ms("2026-01-01T00:07:00Z")).unwrap()),
            "2026-01-01T00:10:00Z"
        );
        assert_eq!(
            iso(schedule
                .last_at_or_before(ms("2026-01-01T00:10:00Z"))
                .unwrap()),
            "2026-01-01T00:10:00Z"
        );
    }

    #[test]
    fn last_slot_at_or_before() {
        let schedule = Schedule::parse("0 3 * * *", "UTC").unwrap();
        assert_eq!(
            iso(schedule
                .last_at_or_before(ms("2026-01-05T02:59:00Z"))
                .unwrap()),
            "2026-01-04T03:00:00Z"
        );
        let monthly = Schedule::parse("@monthly", "UTC").unwrap();
        assert_eq!(
            iso(monthly
                .last_at_or_before(ms("2026-03-20T00:00:00Z"))
                .unwrap()),
            "2026-03-01T00:00:00Z"
        );
    }

    #[test]
    fn refusals_say_what_is_wrong() {
        let err = |expr: &str| Schedule::parse(expr, "UTC").unwrap_err().to_string();
        assert!(
            err("0 3 * *").contains("has 4 fields"),
            "{}",
            err("0 3 * *")
        );
        assert!(err("61 * * * *").contains("outside 0-59"));
        assert!(err("0 0 30 2 *").contains("no date"));
        assert!(err("* * * * MON-SUNDAY").contains("not a number"));
        assert!(err("rate(0 minutes)").contains("out of range"));
        assert!(err("rate(5 fortnights)").contains("rate(N unit)"));
        assert_eq!(
            Schedule::parse("* * * * *", "Mars/Olympus").unwrap_err(),
            ScheduleError::Zone("Mars/Olympus".into())
        );
    }
}
