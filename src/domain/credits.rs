//! `Credits`, the one unit of the books: an unsigned integer with checked arithmetic only;
//! the buckets, and `Taken`: credits by source, promo blocks one by one.

use super::time::Ts;

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

/// The spendable buckets. `Promo` is the sum of an account's promo blocks (each with its
/// own expiry); the consumption order is not a fixed order of buckets but soonest-expiring
/// first (`Account::plan_take`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Bucket {
    Monthly,
    Promo,
    Free,
    Packs,
}

impl Bucket {
    pub const ALL: [Bucket; 4] = [Bucket::Monthly, Bucket::Promo, Bucket::Free, Bucket::Packs];

    pub fn name(self) -> &'static str {
        match self {
            Bucket::Monthly => "monthly",
            Bucket::Promo => "promo",
            Bucket::Free => "free",
            Bucket::Packs => "packs",
        }
    }
    pub fn parse(s: &str) -> Option<Bucket> {
        Bucket::ALL.into_iter().find(|b| b.name() == s)
    }
}

/// Credits per bucket: the balances (where `promo` is the sum of the open blocks), or what
/// one debit took from each (where `promo` is the sum of its `BlockPart`s).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Buckets {
    pub monthly: Credits,
    pub promo: Credits,
    pub free: Credits,
    pub packs: Credits,
}

impl Buckets {
    pub fn get(&self, b: Bucket) -> Credits {
        match b {
            Bucket::Monthly => self.monthly,
            Bucket::Promo => self.promo,
            Bucket::Free => self.free,
            Bucket::Packs => self.packs,
        }
    }
    pub fn get_mut(&mut self, b: Bucket) -> &mut Credits {
        match b {
            Bucket::Monthly => &mut self.monthly,
            Bucket::Promo => &mut self.promo,
            Bucket::Free => &mut self.free,
            Bucket::Packs => &mut self.packs,
        }
    }
    /// The sum of the buckets. The books bound every balance by `granted`, which is checked
    /// on every grant, so this cannot overflow for a state built through `decide`.
    pub fn total(&self) -> Credits {
        self.monthly
            .plus(self.promo)
            .plus(self.free)
            .plus(self.packs)
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

/// Credits of one promo block (the grant with id `grant_id`, open until `expires_at`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockPart {
    pub grant_id: u64,
    pub expires_at: Ts,
    pub credits: Credits,
}

/// Where some credits are, source by source: what a debit or hold took, what comes back,
/// what a refund gave. `buckets.promo` is always the sum of `blocks`, which name each
/// block once, in the order they were taken.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Taken {
    pub buckets: Buckets,
    pub blocks: Vec<BlockPart>,
}

/// One source of credits, with the instant it expires (`None`: never), in the order
/// credits are taken: soonest-expiring first, `monthly` before a block expiring at the
/// same instant, then `free`, then `packs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    Monthly,
    Block(usize),
    Free,
    Packs,
}

impl Taken {
    pub fn total(&self) -> Credits {
        self.buckets.total()
    }
    pub fn is_zero(&self) -> bool {
        self.total().is_zero()
    }

    /// Adds `c` of block `part` (merging with a part of the same block).
    pub fn add_block(&mut self, part: BlockPart) {
        if part.credits.is_zero() {
            return;
        }
        self.buckets.promo = self.buckets.promo.plus(part.credits);
        match self.blocks.iter_mut().find(|b| b.grant_id == part.grant_id) {
            Some(b) => b.credits = b.credits.plus(part.credits),
            None => self.blocks.push(part),
        }
    }

    /// Adds `c` to a bucket that is not `promo`.
    pub fn add_bucket(&mut self, bucket: Bucket, c: Credits) {
        debug_assert!(bucket != Bucket::Promo, "promo credits are added by block");
        let v = self.buckets.get(bucket).plus(c);
        *self.buckets.get_mut(bucket) = v;
    }

    /// Takes `amount` from these credits, soonest-expiring first (`monthly` expiring at
    /// `monthly_expires_at`): what is taken, or `None` when they hold less than `amount`.
    pub fn take(&self, amount: Credits, monthly_expires_at: Ts) -> Option<Taken> {
        if self.total() < amount {
            return None;
        }
        let mut left = amount;
        let mut out = Taken::default();
        // Without promo blocks (the common case) the order is fixed: nothing to sort.
        let sorted;
        let order: &[Source] = if self.blocks.is_empty() {
            &[Source::Monthly, Source::Free, Source::Packs]
        } else {
            sorted = self.order(monthly_expires_at);
            &sorted
        };
        for &source in order {
            if left.is_zero() {
                break;
            }
            let have = match source {
                Source::Monthly => self.buckets.monthly,
                Source::Block(i) => self.blocks[i].credits,
                Source::Free => self.buckets.free,
                Source::Packs => self.buckets.packs,
            };
            let t = left.min(have);
            left = left.minus(t);
            match source {
                Source::Monthly => out.add_bucket(Bucket::Monthly, t),
                Source::Block(i) => out.add_block(BlockPart {
                    credits: t,
                    ..self.blocks[i]
                }),
                Source::Free => out.add_bucket(Bucket::Free, t),
                Source::Packs => out.add_bucket(Bucket::Packs, t),
            }
        }
        debug_assert!(left.is_zero());
        Some(out)
    }

    /// The sources in consumption order.
    fn order(&self, monthly_expires_at: Ts) -> Vec<Source> {
        let mut blocks: Vec<usize> = (0..self.blocks.len()).collect();
        blocks.sort_by_key(|&i| (self.blocks[i].expires_at, self.blocks[i].grant_id));
        let mut out = Vec::with_capacity(blocks.len() + 3);
        let mut monthly_placed = false;
        for i in blocks {
            if !monthly_placed && monthly_expires_at <= self.blocks[i].expires_at {
                out.push(Source::Monthly);
                monthly_placed = true;
            }
            out.push(Source::Block(i));
        }
        if !monthly_placed {
            out.push(Source::Monthly);
        }
        out.push(Source::Free);
        out.push(Source::Packs);
        out
    }

    /// These credits less `part` (which they must contain, source by source).
    pub fn minus(&self, part: &Taken) -> Taken {
        let mut out = Taken {
            buckets: self.buckets,
            blocks: self.blocks.clone(),
        };
        out.buckets.sub(&part.buckets);
        for p in &part.blocks {
            let b = out
                .blocks
                .iter_mut()
                .find(|b| b.grant_id == p.grant_id)
                .expect("invariant: a part of a block comes from that block");
            b.credits = b.credits.minus(p.credits);
        }
        out.blocks.retain(|b| !b.credits.is_zero());
        out
    }

    /// These credits plus `other`, source by source.
    pub fn plus(&self, other: &Taken) -> Taken {
        let mut out = self.clone();
        out.buckets.monthly = out.buckets.monthly.plus(other.buckets.monthly);
        out.buckets.free = out.buckets.free.plus(other.buckets.free);
        out.buckets.packs = out.buckets.packs.plus(other.buckets.packs);
        for p in &other.blocks {
            out.add_block(*p);
        }
        out
    }

    /// Takes `amount` from these credits in refund order, the reverse of consumption
    /// (what lasts longest first: `packs`, `free`, then the expiring sources, latest-
    /// expiring first), so a partial refund gives back what is least likely to expire.
    pub fn take_last(&self, amount: Credits, monthly_expires_at: Ts) -> Option<Taken> {
        let all = self.take(self.total(), monthly_expires_at)?;
        let first = all.take(all.total().checked_sub(amount)?, monthly_expires_at)?;
        Some(self.minus(&first))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MONTH_END: Ts = Ts(1_000);

    fn t(m: u64, f: u64, p: u64, blocks: &[(u64, i64, u64)]) -> Taken {
        let mut out = Taken::default();
        out.add_bucket(Bucket::Monthly, Credits(m));
        out.add_bucket(Bucket::Free, Credits(f));
        out.add_bucket(Bucket::Packs, Credits(p));
        for &(id, exp, c) in blocks {
            out.add_block(BlockPart {
                grant_id: id,
                expires_at: Ts(exp),
                credits: Credits(c),
            });
        }
        out
    }

    #[test]
    fn take_goes_monthly_then_free_then_packs() {
        let b = t(2, 3, 10, &[]);
        assert_eq!(b.take(Credits(7), MONTH_END), Some(t(2, 3, 2, &[])));
        assert_eq!(
            t(10, 3, 10, &[]).take(Credits(7), MONTH_END),
            Some(t(7, 0, 0, &[]))
        );
        assert_eq!(
            t(0, 3, 10, &[]).take(Credits(4), MONTH_END),
            Some(t(0, 3, 1, &[]))
        );
    }

    #[test]
    fn take_is_all_or_nothing() {
        assert_eq!(t(1, 1, 1, &[]).take(Credits(4), MONTH_END), None);
        assert_eq!(
            t(1, 1, 1, &[]).take(Credits(3), MONTH_END),
            Some(t(1, 1, 1, &[]))
        );
    }

    #[test]
    fn promo_blocks_go_soonest_expiring_first_a_tie_to_monthly() {
        // Block 7 expires before the period ends, block 8 with it, block 9 after.
        let b = t(2, 1, 1, &[(9, 2_000, 5), (8, 1_000, 3), (7, 500, 1)]);
        assert_eq!(
            b.take(Credits(1), MONTH_END),
            Some(t(0, 0, 0, &[(7, 500, 1)]))
        );
        assert_eq!(
            b.take(Credits(4), MONTH_END),
            Some(t(2, 0, 0, &[(7, 500, 1), (8, 1_000, 1)]))
        );
        assert_eq!(
            b.take(Credits(12), MONTH_END),
            Some(t(2, 1, 0, &[(7, 500, 1), (8, 1_000, 3), (9, 2_000, 5)]))
        );
    }

    #[test]
    fn take_last_is_the_reverse_of_consumption() {
        let b = t(2, 1, 4, &[(7, 500, 3)]);
        assert_eq!(b.take_last(Credits(5), MONTH_END), Some(t(0, 1, 4, &[])));
        assert_eq!(
            b.take_last(Credits(8), MONTH_END),
            Some(t(2, 1, 4, &[(7, 500, 1)]))
        );
        assert_eq!(b.take_last(Credits(11), MONTH_END), None);
        let all = b.take_last(Credits(10), MONTH_END).unwrap();
        assert_eq!(all, b);
        assert!(b.minus(&all).is_zero());
    }

    #[test]
    fn checked_arithmetic_refuses_to_wrap() {
        assert_eq!(Credits(u64::MAX).checked_add(Credits(1)), None);
        assert_eq!(Credits(0).checked_sub(Credits(1)), None);
        assert_eq!(Credits(u64::MAX / 2 + 1).checked_mul(2), None);
    }
}
