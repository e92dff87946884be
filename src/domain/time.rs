//! Instants and the billing calendar: period k starts at anchor + k calendar months, the
//! day clamped to the month's length, the anchor's day kept (Jan 31 → Feb 28/29 → Mar 31).

use time::{Month, OffsetDateTime, PrimitiveDateTime};

/// An instant in UTC, in milliseconds since the Unix epoch. The domain never reads a clock:
/// every `Ts` it sees was handed to it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ts(pub i64);

/// The earliest and latest instants accepted from outside (years 1970 to 9000): far enough
/// from `time`'s limits that adding months or days can never leave its range.
pub const TS_MIN: Ts = Ts(0);
pub const TS_MAX: Ts = Ts(221_845_392_000_000); // 9000-01-01T00:00:00Z

impl Ts {
    pub fn millis(self) -> i64 {
        self.0
    }
    pub fn plus_millis(self, ms: i64) -> Ts {
        Ts(self.0.saturating_add(ms))
    }
    /// Total: an instant beyond what RFC 3339 can write (years 0000 to 9999) is clamped to
    /// its nearest end, so rendering never fails; every instant the API accepts or
    /// computes is kept within `TS_MIN..=TS_MAX`, far inside.
    fn to_datetime(self) -> OffsetDateTime {
        const RFC3339_MIN_MS: i64 = -62_167_219_200_000; // 0000-01-01T00:00:00Z
        const RFC3339_MAX_MS: i64 = 253_402_300_799_999; // 9999-12-31T23:59:59.999Z
        let ms = self.0.clamp(RFC3339_MIN_MS, RFC3339_MAX_MS) as i128;
        OffsetDateTime::from_unix_timestamp_nanos(ms * 1_000_000).expect("clamped into range")
    }
    fn from_datetime(dt: OffsetDateTime) -> Ts {
        Ts((dt.unix_timestamp_nanos() / 1_000_000) as i64)
    }
    /// RFC 3339 in UTC (`2026-11-24T19:50:06Z`, with milliseconds when there are any).
    pub fn to_rfc3339(self) -> String {
        self.to_datetime()
            .format(&time::format_description::well_known::Rfc3339)
            .expect("invariant: UTC instants always format")
    }
    /// Parses an RFC 3339 instant with any offset; `None` if malformed or out of range.
    pub fn parse_rfc3339(s: &str) -> Option<Ts> {
        let dt = OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
        let ts = Ts::from_datetime(dt);
        (TS_MIN..=TS_MAX).contains(&ts).then_some(ts)
    }
    /// Midnight UTC of this instant's day, as days since the epoch.
    pub fn day_index(self) -> i64 {
        self.0.div_euclid(86_400_000)
    }
}

fn days_in_month(year: i32, month: Month) -> u8 {
    month.length(year)
}

/// `anchor + k` calendar months, keeping the anchor's day (clamped) and time of day.
pub fn add_months(anchor: Ts, k: i64) -> Ts {
    let dt = anchor.to_datetime();
    let month0 = dt.year() as i64 * 12 + (dt.month() as i64 - 1) + k;
    let year = month0.div_euclid(12) as i32;
    let month = Month::try_from((month0.rem_euclid(12) + 1) as u8).expect("1..=12");
    let day = dt.day().min(days_in_month(year, month));
    let date =
        time::Date::from_calendar_date(year, month, day).expect("invariant: clamped day is valid");
    Ts::from_datetime(PrimitiveDateTime::new(date, dt.time()).assume_utc())
}

/// An anchor whose billing period ends exactly at `boundary`: `boundary` minus the fewest
/// calendar months (at least one) that land on a day which maps back to it. One month is
/// not always enough: from Mar 31 one month back is Feb 28, whose next period starts on
/// Mar 28, so the anchor is Jan 31. Used by tests and tools that want a reset at a chosen
/// instant; `add_months(anchor_for_boundary(b), k) == b` for the returned k.
pub fn anchor_for_boundary(boundary: Ts) -> (Ts, i64) {
    (1..=12)
        .map(|k| (add_months(boundary, -k), k))
        .find(|&(a, k)| add_months(a, k) == boundary)
        .expect("invariant: twelve months back always lands on the same day")
}

/// The index k of the period that contains `now`: start(k) <= now < start(k + 1).
/// k is negative when the anchor lies in the future.
pub fn period_index(anchor: Ts, now: Ts) -> i64 {
    let a = anchor.to_datetime();
    let n = now.to_datetime();
    let mut k = (n.year() as i64 - a.year() as i64) * 12 + (n.month() as i64 - a.month() as i64);
    while add_months(anchor, k) > now {
        k -= 1;
    }
    while add_months(anchor, k + 1) <= now {
        k += 1;
    }
    k
}

/// The "todays" where a calendar shortcut breaks: month ends, leap days, the 1st after a
/// short month. For each, an account anchored so its period ends two seconds later has
/// exactly that `next_reset_at`, and rolls over at it.
#[cfg(test)]
pub(crate) const AWKWARD_TODAYS: &[&str] = &[
    "2026-12-01T12:00:00Z",
    "2027-01-31T23:59:58Z",
    "2027-02-28T12:00:00Z",
    "2028-02-29T12:00:00Z",
    "2027-03-01T00:00:00Z",
    "2027-03-31T12:00:00Z",
    "2026-04-30T12:00:00Z",
    "2026-12-31T23:59:59Z",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Ts {
        Ts::parse_rfc3339(s).unwrap()
    }

    #[test]
    fn the_31st_clamps_and_never_drifts() {
        let a = ts("2027-01-31T10:00:00Z");
        assert_eq!(add_months(a, 1), ts("2027-02-28T10:00:00Z"));
        assert_eq!(add_months(a, 2), ts("2027-03-31T10:00:00Z"));
        assert_eq!(add_months(a, 3), ts("2027-04-30T10:00:00Z"));
        assert_eq!(add_months(a, 12), ts("2028-01-31T10:00:00Z"));
    }

    #[test]
    fn leap_february() {
        let a = ts("2028-01-31T00:00:00Z");
        assert_eq!(add_months(a, 1), ts("2028-02-29T00:00:00Z"));
        let leap_day = ts("2028-02-29T12:00:00Z");
        assert_eq!(add_months(leap_day, 12), ts("2029-02-28T12:00:00Z"));
        assert_eq!(add_months(leap_day, 48), ts("2032-02-29T12:00:00Z"));
    }

    #[test]
    fn period_index_finds_the_containing_period() {
        let a = ts("2027-01-31T10:00:00Z");
        assert_eq!(period_index(a, a), 0);
        assert_eq!(period_index(a, ts("2027-02-28T09:59:59Z")), 0);
        assert_eq!(period_index(a, ts("2027-02-28T10:00:00Z")), 1);
        assert_eq!(period_index(a, ts("2027-03-31T09:00:00Z")), 1);
        assert_eq!(period_index(a, ts("2027-07-01T00:00:00Z")), 5);
        assert_eq!(period_index(a, ts("2026-12-31T10:00:00Z")), -1);
    }

    #[test]
    fn negative_months_work_backwards() {
        let a = ts("2027-03-31T00:00:00Z");
        assert_eq!(add_months(a, -1), ts("2027-02-28T00:00:00Z"));
        assert_eq!(add_months(a, -3), ts("2026-12-31T00:00:00Z"));
    }

    #[test]
    fn anchor_for_boundary_ends_a_period_exactly_there_on_awkward_days() {
        for today in AWKWARD_TODAYS {
            let boundary = ts(today).plus_millis(2000);
            let (anchor, k) = anchor_for_boundary(boundary);
            assert!(anchor < boundary, "{today}");
            assert_eq!(add_months(anchor, k), boundary, "{today}");
            let now = ts(today);
            assert_eq!(period_index(anchor, now), k - 1, "{today}");
            assert_eq!(period_index(anchor, boundary), k, "{today}");
            assert_eq!(
                period_index(anchor, boundary.plus_millis(-1)),
                k - 1,
                "{today}"
            );
        }
    }

    #[test]
    fn instants_beyond_the_calendar_render_clamped_instead_of_panicking() {
        assert!(Ts(i64::MAX).to_rfc3339().starts_with("9999-12-31T23:59:59"));
        assert_eq!(Ts(i64::MIN).to_rfc3339(), "0000-01-01T00:00:00Z");
        assert_eq!(TS_MAX.to_rfc3339(), "9000-01-01T00:00:00Z");
    }

    #[test]
    fn rfc3339_round_trip() {
        let t = ts("2026-11-24T19:50:06Z");
        assert_eq!(t.to_rfc3339(), "2026-11-24T19:50:06Z");
        assert_eq!(ts("2026-11-24T20:50:06+01:00"), t);
        assert!(Ts::parse_rfc3339("yesterday").is_none());
        assert!(Ts::parse_rfc3339("9999-01-01T00:00:00Z").is_none());
    }
}
