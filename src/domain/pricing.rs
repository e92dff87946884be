//! Prices, plans, packs and alert thresholds: the configured tariff, validated once.

use std::collections::BTreeMap;

use super::credits::Credits;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pack {
    pub credits: Credits,
    pub price_cents: u64,
}

/// The tariff the books run on. Built from `config.toml`; `Config::validate` guarantees
/// a `free` plan, positive prices, and thresholds in 0..=100.
#[derive(Clone, Debug)]
pub struct Pricing {
    pub operations: BTreeMap<String, Credits>,
    pub plans: BTreeMap<String, Credits>,
    pub packs: BTreeMap<String, Pack>,
    pub free_tier: Credits,
    /// Remaining-percent thresholds, each in 0..=100 (`balance.exhausted` is threshold 0).
    pub thresholds: Vec<u8>,
    pub holds_open_max: usize,
    /// Open promo blocks an account may have (`promo_blocks_max`).
    pub promo_blocks_max: usize,
    /// Members an account may have (`members_max`).
    pub members_max: usize,
    /// `[alerts] forecast_hours`: the forecast alert's horizon for accounts that set none
    /// (`None`: off).
    pub forecast_hours: Option<u32>,
}

/// The plan an account falls back to on cancel.
pub const FREE_PLAN: &str = "free";

impl Pricing {
    /// The defaults of `SPEC.md` section 1.
    pub fn standard() -> Pricing {
        let c = |pairs: &[(&str, u64)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), Credits(*v)))
                .collect::<BTreeMap<_, _>>()
        };
        Pricing {
            operations: c(&[
                ("face_generation", 5),
                ("sample_image", 3),
                ("video_generation", 8),
                ("caption_generation", 1),
            ]),
            plans: c(&[
                ("free", 0),
                ("starter", 50),
                ("growth", 200),
                ("agency", 500),
            ]),
            packs: [
                ("pack_100", 100, 900),
                ("pack_250", 250, 2000),
                ("pack_500", 500, 3500),
                ("pack_1000", 1000, 6000),
            ]
            .iter()
            .map(|(k, c, p)| {
                (
                    k.to_string(),
                    Pack {
                        credits: Credits(*c),
                        price_cents: *p,
                    },
                )
            })
            .collect(),
            free_tier: Credits(50),
            thresholds: vec![25, 10, 0],
            holds_open_max: 1000,
            promo_blocks_max: 100,
            members_max: 1000,
            forecast_hours: Some(24),
        }
    }

    pub fn price(&self, operation: &str) -> Option<Credits> {
        self.operations.get(operation).copied()
    }
    pub fn allocation(&self, plan: &str) -> Option<Credits> {
        self.plans.get(plan).copied()
    }

    /// What `available` buys: for each operation, `available / price` rounded down.
    pub fn affordable(&self, available: Credits) -> impl Iterator<Item = (&str, u64)> + '_ {
        self.operations
            .iter()
            .map(move |(op, price)| (op.as_str(), available.get() / price.get().max(1)))
    }
}
