//! Usage rollups and the forecast: what an account consumed, per UTC day and per
//! operation (`count`, `credits`), plus what it spent per billing period. `Account::apply`
//! keeps them current, so reading them costs the same whatever the history's length, and
//! they live in the account state, so snapshots and replay carry them across restarts.
//! Pure: no clock, `now` is an argument.

use std::collections::BTreeMap;

use time::{Month, OffsetDateTime};

use super::credits::Credits;
use super::time::{Ts, TS_MAX};

pub const DAY_MS: i64 = 86_400_000;

/// Days of rollups kept, counted back from the newest day that has usage. Covers the
/// default history retention (13 months) so that usage trends reach as far back as the
/// ledger does. The bound is part of `apply` (not a setting) so that replay, snapshots
/// and the live state always keep exactly the same days.
pub const USAGE_DAYS_KEPT: i64 = 400;

/// What one operation consumed in one period.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UsageCell {
    /// Units of the operation (the sum of the quantities debited or captured).
    pub count: u64,
    pub credits: Credits,
}

impl UsageCell {
    fn add(&mut self, other: UsageCell) {
        self.count = self.count.saturating_add(other.count);
        self.credits = self.credits.plus(other.credits);
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Day index (days since the epoch, UTC) → operation → usage. At most
    /// `USAGE_DAYS_KEPT` days, each with at most one entry per operation ever priced.
    pub days: BTreeMap<i64, BTreeMap<String, UsageCell>>,
    /// Credits consumed in the current billing period.
    pub period_credits: Credits,
    /// Credits consumed in the last billing period that ended since the account was
    /// created; `None` until one has ended.
    pub last_period_credits: Option<Credits>,
    /// Credits consumed per UTC hour (hours since the epoch), the last `HOURS_KEPT`
    /// hours before the newest: the forecast alert's 24-hour burn rate.
    pub hours: BTreeMap<i64, Credits>,
    /// What members consumed: day → (member, operation) → usage, the same days as `days`.
    /// Only consumption that named a member is here.
    pub members: BTreeMap<i64, BTreeMap<(String, String), UsageCell>>,
}

pub const HOUR_MS: i64 = 3_600_000;
/// Hours of consumption kept for the 24-hour burn rate (the current one and 24 before).
pub const HOURS_KEPT: i64 = 25;

impl Usage {
    /// Records consumption at `at`: a debit, or the spent part of a captured hold.
    pub fn record(
        &mut self,
        at: Ts,
        operation: &str,
        count: u64,
        credits: Credits,
        member: Option<&str>,
    ) {
        self.period_credits = self.period_credits.plus(credits);
        let hour = at.0.div_euclid(HOUR_MS);
        let newest_hour = self.hours.keys().next_back().copied().unwrap_or(hour);
        if hour > newest_hour - HOURS_KEPT {
            let c = self.hours.entry(hour).or_default();
            *c = c.plus(credits);
            let floor = newest_hour.max(hour) - HOURS_KEPT;
            while self
                .hours
                .first_key_value()
                .is_some_and(|(h, _)| *h <= floor)
            {
                self.hours.pop_first();
            }
        }
        let day = at.day_index();
        let newest = self
            .days
            .keys()
            .next_back()
            .copied()
            .unwrap_or(day)
            .max(day);
        let floor = newest - USAGE_DAYS_KEPT + 1;
        if day < floor {
            // Older than every day kept (only a wall clock set back can do this).
            return;
        }
        self.days
            .entry(day)
            .or_default()
            .entry(operation.to_string())
            .or_default()
            .add(UsageCell { count, credits });
        if let Some(m) = member {
            self.members
                .entry(day)
                .or_default()
                .entry((m.to_string(), operation.to_string()))
                .or_default()
                .add(UsageCell { count, credits });
        }
        while self.days.first_key_value().is_some_and(|(d, _)| *d < floor) {
            self.days.pop_first();
        }
        while self
            .members
            .first_key_value()
            .is_some_and(|(d, _)| *d < floor)
        {
            self.members.pop_first();
        }
    }

    /// A refund of `credits` of a debit made at `debit_at`: usage is counted net of
    /// refunds, on the debit's day and hour where those are still kept, and in the
    /// current period when the debit was in it. Counts (units) stay: the job was asked.
    pub fn refund(
        &mut self,
        debit_at: Ts,
        operation: &str,
        member: Option<&str>,
        credits: Credits,
        same_period: bool,
    ) {
        let less = |c: &mut Credits| *c = Credits(c.get().saturating_sub(credits.get()));
        if same_period {
            less(&mut self.period_credits);
        }
        if let Some(c) = self.hours.get_mut(&debit_at.0.div_euclid(HOUR_MS)) {
            less(c);
        }
        let day = debit_at.day_index();
        if let Some(cell) = self.days.get_mut(&day).and_then(|d| d.get_mut(operation)) {
            less(&mut cell.credits);
        }
        if let Some(m) = member {
            let key = (m.to_string(), operation.to_string());
            if let Some(cell) = self.members.get_mut(&day).and_then(|d| d.get_mut(&key)) {
                less(&mut cell.credits);
            }
        }
    }

    /// Credits consumed in the 24 hours up to `now`, by whole UTC hours (the current one
    /// and the 23 before it).
    pub fn last_24h(&self, now: Ts) -> Credits {
        let hour = now.0.div_euclid(HOUR_MS);
        self.hours
            .range(hour - 23..=hour)
            .fold(Credits::ZERO, |s, (_, c)| s.plus(*c))
    }

    /// A billing period ended (one call per period, in order).
    pub fn period_ended(&mut self) {
        self.last_period_credits = Some(self.period_credits);
        self.period_credits = Credits::ZERO;
    }

    /// Usage per operation on the days `from_day..to_day` (end excluded).
    pub fn days_between(
        &self,
        from_day: i64,
        to_day: i64,
    ) -> impl Iterator<Item = (i64, &BTreeMap<String, UsageCell>)> {
        self.days
            .range(from_day..to_day.max(from_day))
            .map(|(d, ops)| (*d, ops))
    }

    /// Credits consumed on the days `from_day..to_day` (end excluded).
    pub fn credits_between(&self, from_day: i64, to_day: i64) -> Credits {
        self.days_between(from_day, to_day)
            .flat_map(|(_, ops)| ops.values())
            .fold(Credits::ZERO, |s, c| s.plus(c.credits))
    }
}

/// Whether periods are UTC days or UTC calendar months.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Granularity {
    Day,
    Month,
}

/// One period of a usage report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsagePeriod {
    pub start: Ts,
    pub end: Ts,
    pub operations: BTreeMap<String, UsageCell>,
    /// With `Slice::ByMember`: member → operation → usage (`operations` is then the
    /// whole account's).
    pub members: Option<BTreeMap<String, BTreeMap<String, UsageCell>>>,
}

/// Which consumption a report counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Slice {
    /// The whole account's.
    All,
    /// One member's only.
    Member(String),
    /// The whole account's, and each member's apart.
    ByMember,
}

impl UsagePeriod {
    pub fn total(&self) -> UsageCell {
        let mut t = UsageCell::default();
        for c in self.operations.values() {
            t.add(*c);
        }
        t
    }
}

/// The start of the UTC day or calendar month that contains `t`.
pub fn period_floor(t: Ts, g: Granularity) -> Ts {
    let day = t.day_index();
    match g {
        Granularity::Day => Ts(day * DAY_MS),
        Granularity::Month => {
            let dt = day_datetime(day);
            let first = time::Date::from_calendar_date(dt.year(), dt.month(), 1)
                .expect("invariant: the 1st exists");
            date_ts(first)
        }
    }
}

/// The start of the period after the one starting at `start`.
pub fn period_next(start: Ts, g: Granularity) -> Ts {
    match g {
        Granularity::Day => Ts(start.0 + DAY_MS),
        Granularity::Month => {
            let dt = day_datetime(start.day_index());
            let (y, m) = match dt.month() {
                Month::December => (dt.year() + 1, Month::January),
                m => (dt.year(), m.next()),
            };
            let first = time::Date::from_calendar_date(y, m, 1).expect("invariant: the 1st exists");
            date_ts(first)
        }
    }
}

/// Julian day number of 1970-01-01.
const UNIX_EPOCH_JULIAN_DAY: i64 = 2_440_588;

fn date_ts(date: time::Date) -> Ts {
    Ts((date.to_julian_day() as i64 - UNIX_EPOCH_JULIAN_DAY) * DAY_MS)
}

fn day_datetime(day: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(day * 86_400).expect("invariant: Ts within range")
}

/// Every period that overlaps `[from, to)`, whole (rollups are per day, so a bound inside
/// a day takes in that day), with what was consumed in it; periods without usage are
/// listed too, so a chart has no holes. `periods_max` bounds the answer.
pub fn report(
    usage: &Usage,
    from: Ts,
    to: Ts,
    g: Granularity,
    periods_max: usize,
    slice: &Slice,
) -> Result<Vec<UsagePeriod>, usize> {
    let mut out = Vec::new();
    let mut start = period_floor(from, g);
    while start < to {
        if out.len() == periods_max {
            return Err(periods_max);
        }
        let end = period_next(start, g);
        let (from_day, to_day) = (start.day_index(), end.day_index());
        let mut operations: BTreeMap<String, UsageCell> = BTreeMap::new();
        let mut members: BTreeMap<String, BTreeMap<String, UsageCell>> = BTreeMap::new();
        let member_days = usage.members.range(from_day..to_day.max(from_day));
        match slice {
            Slice::All | Slice::ByMember => {
                for (_, ops) in usage.days_between(from_day, to_day) {
                    for (op, cell) in ops {
                        operations.entry(op.clone()).or_default().add(*cell);
                    }
                }
                if *slice == Slice::ByMember {
                    for ((m, op), cell) in member_days.flat_map(|(_, cells)| cells) {
                        members
                            .entry(m.clone())
                            .or_default()
                            .entry(op.clone())
                            .or_default()
                            .add(*cell);
                    }
                }
            }
            Slice::Member(name) => {
                for ((m, op), cell) in member_days.flat_map(|(_, cells)| cells) {
                    if m == name {
                        operations.entry(op.clone()).or_default().add(*cell);
                    }
                }
            }
        }
        out.push(UsagePeriod {
            start,
            end,
            operations,
            members: (*slice == Slice::ByMember).then_some(members),
        });
        start = end;
    }
    Ok(out)
}

/// Credits consumed over a trailing window, and the window's length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BurnRate {
    pub credits: Credits,
    /// From the UTC midnight `days - 1` days before today to `now`: between `days - 1`
    /// and `days` days long, so that it is made of whole day rollups and is exact.
    pub window_ms: i64,
}

impl BurnRate {
    /// Credits consumed over the trailing `days` UTC days, today's part included.
    pub fn over(usage: &Usage, now: Ts, days: i64) -> BurnRate {
        let today = now.day_index();
        let first = today - days + 1;
        BurnRate {
            credits: usage.credits_between(first, today + 1),
            window_ms: (now.0 - first * DAY_MS).max(1),
        }
    }

    /// Credits per day (a rate for display, not money).
    pub fn per_day(self) -> f64 {
        self.credits.get() as f64 * DAY_MS as f64 / self.window_ms as f64
    }

    pub fn is_zero(self) -> bool {
        self.credits.is_zero()
    }

    /// When `available` runs out at this rate: `now + available × window / credits`;
    /// `None` at no burn, or when that lies past `TS_MAX` (year 9000): not in any
    /// calendar a billing page shows, so "never at this rate".
    pub fn exhaustion_at(self, now: Ts, available: Credits) -> Option<Ts> {
        if self.is_zero() {
            return None;
        }
        let ms = available.get() as u128 * self.window_ms as u128 / self.credits.get() as u128;
        let at = (now.millis() as i128).checked_add(i128::try_from(ms).ok()?)?;
        (at <= TS_MAX.millis() as i128).then_some(Ts(at as i64))
    }
}

/// The trends a billing page shows.
#[derive(Clone, Debug, PartialEq)]
pub struct Forecast {
    pub burn_7d: BurnRate,
    pub burn_30d: BurnRate,
    /// At the 7-day rate, or the 30-day rate when nothing was consumed in 7 days; `None`
    /// when nothing was consumed in 30 days.
    pub exhaustion_at: Option<Ts>,
}

pub fn forecast(usage: &Usage, now: Ts, available: Credits) -> Forecast {
    let burn_7d = BurnRate::over(usage, now, 7);
    let burn_30d = BurnRate::over(usage, now, 30);
    let rate = if burn_7d.is_zero() { burn_30d } else { burn_7d };
    Forecast {
        burn_7d,
        burn_30d,
        exhaustion_at: rate.exhaustion_at(now, available),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Ts {
        Ts::parse_rfc3339(s).unwrap()
    }

    #[test]
    fn months_and_days_floor_and_advance_in_utc() {
        let t = ts("2028-02-29T23:59:59Z");
        assert_eq!(
            period_floor(t, Granularity::Day),
            ts("2028-02-29T00:00:00Z")
        );
        assert_eq!(
            period_floor(t, Granularity::Month),
            ts("2028-02-01T00:00:00Z")
        );
        assert_eq!(
            period_next(ts("2028-02-01T00:00:00Z"), Granularity::Month),
            ts("2028-03-01T00:00:00Z")
        );
        assert_eq!(
            period_next(ts("2027-12-01T00:00:00Z"), Granularity::Month),
            ts("2028-01-01T00:00:00Z")
        );
    }

    #[test]
    fn a_report_lists_every_overlapping_period_and_sums_months() {
        let mut u = Usage::default();
        u.record(
            ts("2027-01-31T23:00:00Z"),
            "face_generation",
            2,
            Credits(10),
            None,
        );
        u.record(
            ts("2027-02-01T01:00:00Z"),
            "face_generation",
            1,
            Credits(5),
            Some("brand-a"),
        );
        u.record(
            ts("2027-02-01T02:00:00Z"),
            "sample_image",
            3,
            Credits(9),
            None,
        );
        let days = report(
            &u,
            ts("2027-01-31T12:00:00Z"),
            ts("2027-02-02T00:00:00Z"),
            Granularity::Day,
            10,
            &Slice::All,
        )
        .unwrap();
        assert_eq!(days.len(), 2);
        assert_eq!(
            days[0].total(),
            UsageCell {
                count: 2,
                credits: Credits(10)
            }
        );
        assert_eq!(days[1].operations.len(), 2);
        let months = report(
            &u,
            ts("2027-01-01T00:00:00Z"),
            ts("2027-03-01T00:00:00Z"),
            Granularity::Month,
            10,
            &Slice::All,
        )
        .unwrap();
        assert_eq!(months.len(), 2);
        assert_eq!(months[1].operations["face_generation"].count, 1);
        assert_eq!(months[1].total().credits, Credits(14));
        let (from, to) = (ts("2027-01-01T00:00:00Z"), ts("2027-03-01T00:00:00Z"));
        let g = Granularity::Month;
        let one = report(&u, from, to, g, 10, &Slice::Member("brand-a".into())).unwrap();
        assert_eq!(one[0].total().credits, Credits(0));
        assert_eq!(one[1].total().credits, Credits(5));
        let by = report(&u, from, to, g, 10, &Slice::ByMember).unwrap();
        assert_eq!(by[1].total().credits, Credits(14));
        let members = by[1].members.as_ref().unwrap();
        assert_eq!(members["brand-a"]["face_generation"].credits, Credits(5));
        assert_eq!(members.len(), 1);
        assert!(report(
            &u,
            Ts(0),
            ts("2027-01-01T00:00:00Z"),
            Granularity::Day,
            100,
            &Slice::All
        )
        .is_err());
    }

    #[test]
    fn rollups_keep_a_bounded_window_of_days() {
        let mut u = Usage::default();
        let t0 = ts("2027-01-01T00:00:00Z");
        for d in 0..(USAGE_DAYS_KEPT + 50) {
            u.record(
                t0.plus_millis(d * DAY_MS),
                "caption_generation",
                1,
                Credits(1),
                None,
            );
        }
        assert_eq!(u.days.len() as i64, USAGE_DAYS_KEPT);
        assert_eq!(*u.days.keys().next().unwrap(), t0.day_index() + 50);
        // A wall clock set back before the window records nothing in the rollups.
        u.record(t0, "caption_generation", 1, Credits(1), None);
        assert_eq!(u.days.len() as i64, USAGE_DAYS_KEPT);
    }

    #[test]
    fn burn_rates_use_whole_days_up_to_now() {
        let mut u = Usage::default();
        let now = ts("2027-03-10T12:00:00Z");
        u.record(
            ts("2027-03-10T01:00:00Z"),
            "face_generation",
            13,
            Credits(65),
            None,
        );
        u.record(
            ts("2027-03-04T01:00:00Z"),
            "face_generation",
            13,
            Credits(65),
            None,
        );
        u.record(
            ts("2027-03-03T23:00:00Z"),
            "face_generation",
            100,
            Credits(500),
            None,
        ); // outside 7d
        let f = forecast(&u, now, Credits(130));
        // 7 days: from 2027-03-04T00:00Z to now, 6.5 days, 130 credits → 20 per day.
        assert_eq!(f.burn_7d.credits, Credits(130));
        assert_eq!(f.burn_7d.window_ms, 13 * DAY_MS / 2);
        assert_eq!(f.burn_7d.per_day(), 20.0);
        assert_eq!(f.burn_30d.credits, Credits(630));
        // 130 available at 20 a day: 6.5 days from now.
        assert_eq!(f.exhaustion_at, Some(ts("2027-03-17T00:00:00Z")));
        let idle = forecast(&Usage::default(), now, Credits(5));
        assert_eq!(idle.exhaustion_at, None);
    }

    #[test]
    fn the_last_24_hours_and_refunds_net_out() {
        let mut u = Usage::default();
        let now = ts("2027-03-10T12:30:00Z");
        u.record(
            ts("2027-03-09T12:59:00Z"),
            "sample_image",
            1,
            Credits(3),
            None,
        ); // 24 h ago
        u.record(
            ts("2027-03-09T13:00:00Z"),
            "sample_image",
            1,
            Credits(3),
            None,
        );
        u.record(now, "face_generation", 1, Credits(5), Some("m"));
        assert_eq!(u.last_24h(now), Credits(8));
        assert!(u.hours.len() as i64 <= HOURS_KEPT);
        u.refund(now, "face_generation", Some("m"), Credits(2), true);
        assert_eq!(u.last_24h(now), Credits(6));
        assert_eq!(u.period_credits, Credits(9));
        let day = now.day_index();
        assert_eq!(u.days[&day]["face_generation"].credits, Credits(3));
        assert_eq!(u.days[&day]["face_generation"].count, 1);
        let key = ("m".to_string(), "face_generation".to_string());
        assert_eq!(u.members[&day][&key].credits, Credits(3));
        // An hour a day later keeps at most the window.
        u.record(
            now.plus_millis(DAY_MS),
            "caption_generation",
            1,
            Credits(1),
            None,
        );
        assert_eq!(u.last_24h(now.plus_millis(DAY_MS)), Credits(1));
        assert!(u.hours.len() as i64 <= HOURS_KEPT);
    }
}
