//! Schedules of `schedule:` triggers: cron expressions in a time zone (the
//! usual five fields, AWS's `cron(...)` with six and Tencent SCF's seven,
//! seconds first and the year last, with `L`, `W` and `#`), and fixed
//! rates.
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

/// Bit sets of the values each field allows, and the day rules that
/// bits cannot say (`L`, `W`, `#`).
#[derive(Debug, Clone)]
struct Cron {
    /// Bits 0 to 59; only `0` in the forms without seconds.
    seconds: u64,
    minutes: u64,
    hours: u32,
    /// Bits 1 to 31.
    days: u32,
    /// Bits 1 to 12.
    months: u16,
    /// Bits 0 (Sunday) to 6.
    weekdays: u8,
    /// Years from [`FIRST_YEAR`], when the form has a year field.
    years: Option<Vec<bool>>,
    /// `L`: the month's last day; `LW`: its last weekday (Monday to
    /// Friday); `NW`: the weekday nearest the Nth (bits 1 to 31).
    last_day: bool,
    last_weekday: bool,
    nearest_weekday: u32,
    /// `D#N`: the Nth weekday D of the month, as (D, N).
    nth_weekdays: Vec<(u8, u8)>,
    /// `DL`: the month's last weekday D (bits 0 to 6).
    last_weekdays: u8,
    /// Whether day-of-month and day-of-week are unrestricted (`*`, `?`,
    /// or a field that starts with `*`, as cronie reads `*/2`): when both
    /// are restricted a day matching either fires, as in every cron.
    any_day: bool,
    any_weekday: bool,
}

/// The first year a year field may name; the last is [`LAST_YEAR`].
const FIRST_YEAR: u32 = 1970;
const LAST_YEAR: u32 = 2199;

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
        if schedule
            .next_after(Timestamp::now().as_millisecond())
            .is_none()
        {
            return Err(ScheduleError::Expression(format!(
                "{expression:?} names no date to come (such as 30 February, or a year gone by)"
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

/// Which of the cron forms an expression is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    /// minute hour day-of-month month day-of-week (0 or 7 Sunday).
    Standard,
    /// AWS EventBridge's `cron(minute hour day-of-month month day-of-week
    /// year)`: day-of-week 1 (Sunday) to 7.
    Aws,
    /// Tencent SCF's second minute hour day-of-month month day-of-week
    /// (0 Sunday) year.
    Scf,
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
        let (form, body) = match expanded
            .strip_prefix("cron(")
            .and_then(|e| e.strip_suffix(')'))
        {
            Some(body) => (Form::Aws, body),
            None => (Form::Standard, expanded),
        };
        let fields: Vec<&str> = body.split_whitespace().collect();
        let form = match (form, fields.len()) {
            (Form::Aws, 6) => Form::Aws,
            (Form::Aws, n) => {
                return Err(ScheduleError::Expression(format!(
                    "{expression:?} has {n} fields; AWS's cron() has six: minute hour day-of-month month day-of-week year, such as \"cron(0 12 * * ? *)\""
                )));
            }
            (_, 5) => Form::Standard,
            (_, 7) => Form::Scf,
            (_, n) => {
                return Err(ScheduleError::Expression(format!(
                    "{expression:?} has {n} fields; a cron expression has five: minute hour day-of-month month day-of-week, such as \"0 3 * * *\" (03:00 every day); or seven, with seconds first and the year last (Tencent SCF's form); or AWS's cron(minute hour day-of-month month day-of-week year); or write rate(5 minutes)"
                )));
            }
        };
        let (seconds, rest) = match form {
            Form::Scf => (field(fields[0], "second", 0, 59, &[])?, &fields[1..]),
            _ => (1, &fields[..]),
        };
        let minutes = field(rest[0], "minute", 0, 59, &[])?;
        let hours = field(rest[1], "hour", 0, 23, &[])?;
        let months = field(rest[3], "month", 1, 12, &MONTHS)?;
        let mut cron = Cron {
            seconds,
            minutes,
            hours: hours as u32,
            days: 0,
            months: months as u16,
            weekdays: 0,
            years: None,
            last_day: false,
            last_weekday: false,
            nearest_weekday: 0,
            nth_weekdays: Vec::new(),
            last_weekdays: 0,
            any_day: unrestricted(rest[2]),
            any_weekday: unrestricted(rest[4]),
        };
        cron.day_of_month(rest[2])?;
        cron.day_of_week(rest[4], form)?;
        if let Some(years) = rest.get(5) {
            let bits = wide_field(years, "year", FIRST_YEAR, LAST_YEAR)?;
            cron.years = Some(bits);
        }
        Ok(cron)
    }

    /// The day-of-month field: the usual forms, and `L`, `LW`, `NW`.
    fn day_of_month(&mut self, text: &str) -> Result<(), ScheduleError> {
        let bad =
            |why: String| ScheduleError::Expression(format!("day of month field {text:?}: {why}"));
        let mut plain = Vec::new();
        for part in text.split(',') {
            let upper = part.to_ascii_uppercase();
            if upper == "L" {
                self.last_day = true;
            } else if upper == "LW" {
                self.last_weekday = true;
            } else if let Some(day) = upper.strip_suffix('W') {
                let day: u32 = day
                    .parse()
                    .ok()
                    .filter(|d| (1..=31).contains(d))
                    .ok_or_else(|| bad(format!("{part:?}: W follows a day from 1 to 31")))?;
                self.nearest_weekday |= 1 << day;
            } else {
                plain.push(part);
            }
        }
        if !plain.is_empty() {
            self.days = field(&plain.join(","), "day of month", 1, 31, &[])? as u32;
        }
        Ok(())
    }

    /// The day-of-week field: the usual forms, and `D#N`, `DL` (and `L`
    /// alone, Saturday, in AWS's form), numbered as `form` numbers days.
    fn day_of_week(&mut self, text: &str, form: Form) -> Result<(), ScheduleError> {
        let bad =
            |why: String| ScheduleError::Expression(format!("day of week field {text:?}: {why}"));
        // AWS numbers Sunday 1 to Saturday 7; the others Sunday 0 (or 7).
        let (min, max, shift) = match form {
            Form::Aws => (1, 7, 1),
            _ => (0, 7, 0),
        };
        let day = |v: &str| -> Result<u8, ScheduleError> {
            let bits = field(v, "day of week", min, max, &WEEKDAYS)?;
            let n = bits.trailing_zeros();
            if bits.count_ones() != 1 {
                return Err(bad(format!("{v:?} is not one day")));
            }
            Ok(((n - shift) % 7) as u8)
        };
        let mut plain = Vec::new();
        for part in text.split(',') {
            let upper = part.to_ascii_uppercase();
            if let Some((d, n)) = upper.split_once('#') {
                let n: u8 = n
                    .parse()
                    .ok()
                    .filter(|n| (1..=5).contains(n))
                    .ok_or_else(|| bad(format!("{part:?}: # is followed by 1 to 5")))?;
                self.nth_weekdays.push((day(d)?, n));
            } else if upper == "L" && form == Form::Aws {
                self.weekdays |= 1 << 6;
            } else if let Some(d) = upper.strip_suffix('L').filter(|d| !d.is_empty()) {
                self.last_weekdays |= 1 << day(d)?;
            } else {
                plain.push(part);
            }
        }
        if !plain.is_empty() {
            let bits = field(&plain.join(","), "day of week", min, max, &WEEKDAYS)?;
            for v in min..=max {
                if bits & (1 << v) != 0 {
                    self.weekdays |= 1 << ((v - shift) % 7);
                }
            }
        }
        Ok(())
    }

    fn year_allowed(&self, year: i16) -> bool {
        let Some(years) = &self.years else {
            return true;
        };
        usize::try_from(i32::from(year) - FIRST_YEAR as i32)
            .is_ok_and(|y| years.get(y).copied().unwrap_or(false))
    }

    /// The first allowed year after `year`.
    fn next_year(&self, year: i16) -> Option<i16> {
        (year + 1..=LAST_YEAR as i16).find(|y| self.year_allowed(*y))
    }

    /// The last allowed year before `year`.
    fn previous_year(&self, year: i16) -> Option<i16> {
        (FIRST_YEAR as i16..year)
            .rev()
            .find(|y| self.year_allowed(*y))
    }

    fn day_matches(&self, date: Date) -> bool {
        if self.months & (1 << date.month()) == 0 || !self.year_allowed(date.year()) {
            return false;
        }
        let last = date.last_of_month().day();
        let weekday_of = |d: Date| d.weekday().to_sunday_zero_offset();
        let day = self.days & (1 << date.day()) != 0
            || (self.last_day && date.day() == last)
            || (self.last_weekday && date == last_weekday(date))
            || (self.nearest_weekday != 0
                && (1..=31).any(|n| {
                    self.nearest_weekday & (1 << n) != 0 && nearest_weekday(date, n) == Some(date)
                }));
        let wd = weekday_of(date);
        let weekday = self.weekdays & (1 << wd) != 0
            || self
                .nth_weekdays
                .iter()
                .any(|&(d, n)| d == wd as u8 && (date.day() - 1) / 7 + 1 == n as i8)
            || (self.last_weekdays & (1 << wd) != 0 && date.day() + 7 > last);
        match (self.any_day, self.any_weekday) {
            (false, false) => day || weekday,
            _ => day && weekday,
        }
    }

    /// The local times of the slots of a day that matches, in order (or
    /// backwards).
    fn locals_on(
        &self,
        date: Date,
        backwards: bool,
    ) -> Box<dyn Iterator<Item = jiff::civil::DateTime> + '_> {
        let ordered = move |n: i8| -> Box<dyn Iterator<Item = i8>> {
            if backwards {
                Box::new((0..n).rev())
            } else {
                Box::new(0..n)
            }
        };
        Box::new(
            ordered(24)
                .filter(|h| self.hours & (1 << h) != 0)
                .flat_map(move |hour| {
                    ordered(60)
                        .filter(|m| self.minutes & (1 << m) != 0)
                        .flat_map(move |minute| {
                            ordered(60)
                                .filter(|s| self.seconds & (1 << s) != 0)
                                .map(move |second| date.at(hour, minute, second, 0))
                        })
                }),
        )
    }

    /// The instant of a local time (a time a gap skips comes after it).
    fn instant(local: jiff::civil::DateTime, zone: &TimeZone) -> Option<i64> {
        let zoned = zone.to_ambiguous_zoned(local).compatible().ok()?;
        Some(zoned.timestamp().as_millisecond())
    }

    /// Whether `date` has no change of offset: then its slots' instants
    /// are in the order of their local times, and the first that fits is
    /// the answer (a second-by-second schedule looks at one slot, not a
    /// day's 86,400). On a day with a change, a gap's shifted times can
    /// come out of order, and every slot is looked at.
    fn steady(date: Date, zone: &TimeZone) -> bool {
        let offset = |d: Date| {
            zone.to_ambiguous_zoned(d.at(0, 0, 0, 0))
                .compatible()
                .ok()
                .map(|z| z.offset())
        };
        match date.tomorrow() {
            Ok(next) => offset(date).is_some() && offset(date) == offset(next),
            Err(_) => false,
        }
    }

    fn next_after(&self, after_ms: i64, zone: &TimeZone) -> Option<i64> {
        let after = Timestamp::from_millisecond(after_ms).ok()?;
        // From the day before: a gap's shifted times can cross midnight.
        let mut date = after.to_zoned(zone.clone()).date().yesterday().ok()?;
        for _ in 0..HORIZON_DAYS {
            // Years the field leaves out are skipped whole.
            if !self.year_allowed(date.year()) {
                let year = self.next_year(date.year())?;
                date = Date::new(year, 1, 1).ok()?;
            }
            if self.day_matches(date) {
                let mut slots = self
                    .locals_on(date, false)
                    .filter_map(|local| Cron::instant(local, zone))
                    .filter(|s| *s > after_ms);
                let slot = if Cron::steady(date, zone) {
                    slots.next()
                } else {
                    slots.min()
                };
                if slot.is_some() {
                    return slot;
                }
            }
            date = date.tomorrow().ok()?;
        }
        None
    }

    fn last_at_or_before(&self, at_ms: i64, zone: &TimeZone) -> Option<i64> {
        let at = Timestamp::from_millisecond(at_ms).ok()?;
        let mut date = at.to_zoned(zone.clone()).date().tomorrow().ok()?;
        for _ in 0..HORIZON_DAYS {
            if !self.year_allowed(date.year()) {
                let year = self.previous_year(date.year())?;
                date = Date::new(year, 12, 31).ok()?;
            }
            if self.day_matches(date) {
                let mut slots = self
                    .locals_on(date, true)
                    .filter_map(|local| Cron::instant(local, zone))
                    .filter(|s| *s <= at_ms);
                let slot = if Cron::steady(date, zone) {
                    slots.next()
                } else {
                    slots.max()
                };
                if slot.is_some() {
                    return slot;
                }
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
    let mut bits = 0u64;
    each_value(text, what, (min, max), names, |v| bits |= 1 << v)?;
    Ok(bits)
}

/// Calls `allow` with every value `text` names, a field from `min` to
/// `max` in cron's syntax.
fn each_value(
    text: &str,
    what: &str,
    (min, max): (u32, u32),
    names: &[&str],
    mut allow: impl FnMut(u32),
) -> Result<(), ScheduleError> {
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
            allow(v);
        }
    }
    Ok(())
}

/// Whether a day field leaves the day unrestricted: `*`, `?`, or a field
/// that starts with `*` (`*/2`), as cronie reads it.
fn unrestricted(text: &str) -> bool {
    text == "?" || text.starts_with('*')
}

/// The last Monday-to-Friday of `date`'s month.
fn last_weekday(date: Date) -> Date {
    let mut last = date.last_of_month();
    while matches!(last.weekday().to_sunday_zero_offset(), 0 | 6) {
        last = last.yesterday().unwrap_or(last);
    }
    last
}

/// The Monday-to-Friday nearest the `n`th of `date`'s month, within it;
/// `None` when the month has no `n`th.
fn nearest_weekday(date: Date, n: i8) -> Option<Date> {
    let target = Date::new(date.year(), date.month(), n).ok()?;
    let last = date.last_of_month().day();
    Some(match target.weekday().to_sunday_zero_offset() {
        // Saturday: the Friday before, or the Monday after the 1st.
        6 if n == 1 => target.checked_add(jiff::Span::new().days(2)).ok()?,
        6 => target.yesterday().ok()?,
        // Sunday: the Monday after, or the Friday before the last day.
        0 if n == last => target.checked_sub(jiff::Span::new().days(2)).ok()?,
        0 => target.tomorrow().ok()?,
        _ => target,
    })
}

/// A field over a range too wide for a bit set (years), as a list of
/// which values it allows from `min`.
fn wide_field(text: &str, what: &str, min: u32, max: u32) -> Result<Vec<bool>, ScheduleError> {
    let mut allowed = vec![false; (max - min + 1) as usize];
    each_value(text, what, (min, max), &[], |v| {
        allowed[(v - min) as usize] = true;
    })?;
    Ok(allowed)
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
    fn a_day_field_that_starts_with_a_star_is_unrestricted() {
        // Odd days of the month, whatever the weekday (cronie's reading):
        // not "odd days or Mondays".
        assert_eq!(
            next("0 0 */2 * MON", "UTC", "2026-01-01T00:00:00Z"),
            // 2026-01-05 is the first odd day that is a Monday.
            "2026-01-05T00:00:00Z"
        );
        assert_eq!(
            next("0 0 */2 * *", "UTC", "2026-01-01T00:00:00Z"),
            "2026-01-03T00:00:00Z"
        );
    }

    #[test]
    fn aws_cron_with_its_wildcards() {
        // Noon every day.
        assert_eq!(
            next("cron(0 12 * * ? *)", "UTC", "2026-01-01T12:00:00Z"),
            "2026-01-02T12:00:00Z"
        );
        // 10:15 on the last day of each month.
        assert_eq!(
            next("cron(15 10 L * ? *)", "UTC", "2026-02-01T00:00:00Z"),
            "2026-02-28T10:15:00Z"
        );
        // The weekday nearest the 1st: 1 August 2026 is a Saturday, so
        // Monday the 3rd.
        assert_eq!(
            next("cron(0 9 1W * ? *)", "UTC", "2026-07-15T00:00:00Z"),
            "2026-08-03T09:00:00Z"
        );
        // The last weekday of January 2026: Friday the 30th.
        assert_eq!(
            next("cron(0 18 LW * ? *)", "UTC", "2026-01-01T00:00:00Z"),
            "2026-01-30T18:00:00Z"
        );
        // The second Tuesday (AWS numbers Sunday 1): 13 January 2026.
        assert_eq!(
            next("cron(0 8 ? * 3#2 *)", "UTC", "2026-01-01T00:00:00Z"),
            "2026-01-13T08:00:00Z"
        );
        // Monday to Friday by AWS numbers; 3 January 2026 is a Saturday.
        assert_eq!(
            next("cron(0 8 ? * 2-6 *)", "UTC", "2026-01-02T09:00:00Z"),
            "2026-01-05T08:00:00Z"
        );
        // The last Friday of the month (6L), and a year field.
        assert_eq!(
            next("cron(0 0 ? * 6L 2027)", "UTC", "2026-01-01T00:00:00Z"),
            "2027-01-29T00:00:00Z"
        );
        assert!(Schedule::parse("cron(0 0 ? * 6L 2020)", "UTC").is_err());
        // A year far ahead is found without walking every day to it.
        assert_eq!(
            next("cron(0 0 1 1 ? 2150)", "UTC", "2026-01-01T00:00:00Z"),
            "2150-01-01T00:00:00Z"
        );
    }

    #[test]
    fn scf_seven_fields_with_seconds_and_year() {
        // Every 30 seconds.
        assert_eq!(
            next("*/30 * * * * * *", "UTC", "2026-01-01T00:00:10Z"),
            "2026-01-01T00:00:30Z"
        );
        // 02:00:00 on the 1st of each month, in 2099 only.
        assert_eq!(
            next("0 0 2 1 * * 2099", "UTC", "2099-03-05T00:00:00Z"),
            "2099-04-01T02:00:00Z"
        );
        // Sunday is 0.
        assert_eq!(
            next("0 0 0 ? * 0 *", "UTC", "2026-01-01T00:00:00Z"),
            "2026-01-04T00:00:00Z"
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
        assert!(err("0 0 0 1 1 * 2020").contains("a year gone by"));
        assert!(err("* * * * MON-SUNDAY").contains("not a number"));
        assert!(err("rate(0 minutes)").contains("out of range"));
        assert!(err("cron(0 12 * * ?)").contains("six"));
        assert!(err("0 0 12 * * ?").contains("has 6 fields"));
        assert!(err("cron(0 0 ? * 2#9 *)").contains("1 to 5"));
        assert!(err("cron(0 0 40W * ? *)").contains("W follows"));
        assert!(err("rate(5 fortnights)").contains("rate(N unit)"));
        assert_eq!(
            Schedule::parse("* * * * *", "Mars/Olympus").unwrap_err(),
            ScheduleError::Zone("Mars/Olympus".into())
        );
    }
}
