//! Low-balance alerts: which thresholds a mutation crossed, which it re-armed.
//!
//! remaining % = available / period_budget (0 when the budget is 0). A threshold fires
//! once when remaining % falls to or below it, and re-arms when it rises above it again
//! through credits added (purchase, grant, upgrade, reset). Credits coming back from a
//! hold (release, expiry, the unspent part of a capture) re-arm no threshold above 0, so
//! reserving and releasing never sends the same low-balance notice twice.
//! Threshold 0 is `balance.exhausted`; it re-arms by any rise above 0 (`balance.replenished`).

use super::credits::Credits;
use super::time::Ts;

/// The fired/re-armed thresholds of one event, as bit sets over 0..=100. Stored in the
/// event, so replay reproduces the alert state even if the configured thresholds change.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AlertChange {
    pub fired: u128,
    pub rearmed: u128,
    /// `balance.forecast_low` fired, with the projected exhaustion instant.
    pub forecast_fired: Option<Ts>,
    /// The forecast alert re-armed (the projection moved past twice `forecast_hours`, or
    /// a new period began).
    pub forecast_rearmed: bool,
}

impl AlertChange {
    pub fn is_empty(&self) -> bool {
        self.fired == 0
            && self.rearmed == 0
            && self.forecast_fired.is_none()
            && !self.forecast_rearmed
    }
    /// Fired thresholds, highest first.
    pub fn fired_thresholds(&self) -> Vec<u8> {
        bits_desc(self.fired)
    }
    pub fn rearmed_thresholds(&self) -> Vec<u8> {
        bits_desc(self.rearmed)
    }
    /// Whether this change took the account out of exhaustion.
    pub fn replenished(&self) -> bool {
        self.rearmed & 1 != 0
    }
}

fn bits_desc(set: u128) -> Vec<u8> {
    (0..=100u8)
        .rev()
        .filter(|t| set & (1u128 << t) != 0)
        .collect()
}

/// Whether `available / budget` is at or below `threshold` percent, in integers.
pub fn at_or_below(available: Credits, budget: Credits, threshold: u8) -> bool {
    if budget.is_zero() {
        return true;
    }
    (available.get() as u128) * 100 <= (threshold as u128) * (budget.get() as u128)
}

/// The alerts a move to (`available`, `budget`) causes, given the set already `fired`.
/// `credits_added`: the move added credits to the account (not merely returned a hold's);
/// only then do thresholds above 0 re-arm.
pub fn evaluate(
    fired: u128,
    available: Credits,
    budget: Credits,
    thresholds: &[u8],
    credits_added: bool,
) -> AlertChange {
    let mut change = AlertChange::default();
    for &t in thresholds {
        let bit = 1u128 << t;
        let below = at_or_below(available, budget, t);
        if below && fired & bit == 0 {
            change.fired |= bit;
        } else if !below && fired & bit != 0 && (credits_added || t == 0) {
            change.rearmed |= bit;
        }
    }
    change
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &[u8] = &[25, 10, 0];

    #[test]
    fn fires_each_threshold_once_on_the_way_down() {
        let budget = Credits(100);
        let mut fired = 0u128;
        let mut log = vec![];
        for available in [100, 80, 26, 25, 24, 11, 10, 5, 1, 0, 0] {
            let c = evaluate(fired, Credits(available), budget, T, true);
            fired = (fired | c.fired) & !c.rearmed;
            log.push(c.fired_thresholds());
        }
        let expect: Vec<Vec<u8>> = vec![
            vec![],
            vec![],
            vec![],
            vec![25],
            vec![],
            vec![],
            vec![10],
            vec![],
            vec![],
            vec![0],
            vec![],
        ];
        assert_eq!(log, expect);
    }

    #[test]
    fn rearms_when_rising_above() {
        let fired = (1 << 25) | (1 << 10) | 1;
        let c = evaluate(fired, Credits(20), Credits(100), T, true);
        assert_eq!(c.rearmed_thresholds(), vec![10, 0]);
        assert!(c.replenished());
        assert!(c.fired == 0);
    }

    #[test]
    fn credits_coming_back_from_a_hold_rearm_only_exhaustion() {
        let fired = (1 << 25) | (1 << 10) | 1;
        let c = evaluate(fired, Credits(100), Credits(100), T, false);
        assert_eq!(c.rearmed_thresholds(), vec![0]);
        assert!(c.replenished());
    }

    #[test]
    fn zero_budget_counts_as_zero_percent() {
        let c = evaluate(0, Credits(0), Credits(0), T, true);
        assert_eq!(c.fired_thresholds(), vec![25, 10, 0]);
    }
}
