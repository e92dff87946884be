#!/usr/bin/env bash
# Runs the deterministic simulator (tests/simulator.rs) over many seeds, optimised.
# Usage: benches/simulate.sh [SEEDS] [STEPS] [FIRST_SEED]   (defaults: 5000 400 1000000)
# A failure prints the seed that reproduces it; the last line counts seeds and crashes.
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${1:-5000}
steps=${2:-400}
start=${3:-1000000}
SIM_SEEDS=$seeds SIM_STEPS=$steps SIM_SEED_START=$start \
    cargo test --release --test simulator -- --nocapture 2>&1 | grep -E '^simulator|panicked|reproduce|test result'
