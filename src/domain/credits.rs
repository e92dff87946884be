//! `Credits`, the one unit of the books: an unsigned integer with checked arithmetic only.

/// A number of credits. There is no subtraction that can wrap and no float anywhere.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Credits(pub u64);

impl Credits {
    pub const ZERO: Credits = Credits(0);
    /// The most any balance may hold: 2^53 - 1, the largest integer a JSON client reading
    /// numbers as doubles (JavaScript, most dashboards) still gets exactly. Credits added
    /// past it are refused, so every balance the API shows is exact everywhere.
    pub const MAX: Credits = Credits((1 << 53) - 1);

    pub fn get(self) -> u64 {
        self.0
    }
    pub fn is_zero(self) -> bool {
        self.0 == 0
    }
    pub fn checked_add(self, other: Credits) -> Option<Credits> {
        self.0.checked_add(other.0).map(Credits)
    }
    pub fn checked_sub(self, other: Credits) -> Option<Credits> {
        self.0.checked_sub(other.0).map(Credits)
    }
    pub fn checked_mul(self, factor: u64) -> Option<Credits> {
        self.0.checked_mul(factor).map(Credits)
    }
    /// Addition inside `apply`, where `decide` already proved the sum fits.
    pub fn plus(self, other: Credits) -> Credits {
        self.checked_add(other)
            .expect("invariant: credits overflow after decide checked it")
    }
    /// Subtraction inside `apply`: a bucket below zero is a bug, never a balance.
    pub fn minus(self, other: Credits) -> Credits {
        self.checked_sub(other)
            .expect("invariant: a bucket went below zero")
    }
}

impl std::fmt::Display for Credits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The three spendable buckets, in consumption order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Bucket {
    Monthly,
    Free,
    Packs,
}

impl Bucket {
    pub const ALL: [Bucket; 3] = [Bucket::Monthly, Bucket::Free, Bucket::Packs];

    pub fn name(self) -> &'static str {
        match self {
            Bucket::Monthly => "monthly",
            Bucket::Free => "free",
            Bucket::Packs => "packs",
        }
    }
    pub fn parse(s: &str) -> Option<Bucket> {
        Bucket::ALL.into_iter().find(|b| b.name() == s)
    }
}

/// Credits per spendable bucket: the balances, or what one debit took from each.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Buckets {
    pub monthly: Credits,
    pub free: Credits,
    pub packs: Credits,
}

impl Buckets {
    pub fn get(&self, b: Bucket) -> Credits {
        match b {
            Bucket::Monthly => self.monthly,
            Bucket::Free => self.free,
            Bucket::Packs => self.packs,
        }
    }
    pub fn get_mut(&mut self, b: Bucket) -> &mut Credits {
        match b {
            Bucket::Monthly => &mut self.monthly,
            Bucket::Free => &mut self.free,
            Bucket::Packs => &mut self.packs,
        }
    }
    /// The sum of the buckets. The books bound every balance by `granted`, which is checked
    /// on every grant, so this cannot overflow for a state built through `decide`.
    pub fn total(&self) -> Credits {
        self.monthly.plus(self.free).plus(self.packs)
    }

    /// What taking `amount` would take from each bucket, in consumption order (the bucket
    /// that expires first goes first), or `None` when the buckets hold less than `amount`.
    pub fn plan_take(&self, amount: Credits) -> Option<Buckets> {
        if self.total() < amount {
            return None;
        }
        let mut left = amount;
        let mut taken = Buckets::default();
        for b in Bucket::ALL {
            let t = left.min(self.get(b));
            *taken.get_mut(b) = t;
            left = left.minus(t);
        }
        debug_assert!(left.is_zero());
        Some(taken)
    }

    pub fn add(&mut self, other: &Buckets) {
        for b in Bucket::ALL {
            let v = self.get(b).plus(other.get(b));
            *self.get_mut(b) = v;
        }
    }
    pub fn sub(&mut self, other: &Buckets) {
        for b in Bucket::ALL {
            let v = self.get(b).minus(other.get(b));
            *self.get_mut(b) = v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(m: u64, f: u64, p: u64) -> Buckets {
        Buckets {
            monthly: Credits(m),
            free: Credits(f),
            packs: Credits(p),
        }
    }

    #[test]
    fn take_goes_monthly_then_free_then_packs() {
        assert_eq!(b(2, 3, 10).plan_take(Credits(7)), Some(b(2, 3, 2)));
        assert_eq!(b(10, 3, 10).plan_take(Credits(7)), Some(b(7, 0, 0)));
        assert_eq!(b(0, 3, 10).plan_take(Credits(4)), Some(b(0, 3, 1)));
    }

    #[test]
    fn take_is_all_or_nothing() {
        assert_eq!(b(1, 1, 1).plan_take(Credits(4)), None);
        assert_eq!(b(1, 1, 1).plan_take(Credits(3)), Some(b(1, 1, 1)));
    }

    #[test]
    fn checked_arithmetic_refuses_to_wrap() {
        assert_eq!(Credits(u64::MAX).checked_add(Credits(1)), None);
        assert_eq!(Credits(0).checked_sub(Credits(1)), None);
        assert_eq!(Credits(u64::MAX / 2 + 1).checked_mul(2), None);
    }
}
