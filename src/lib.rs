//! creditsd: the credit books of a generation product, kept by one actor per account.
pub mod domain;
