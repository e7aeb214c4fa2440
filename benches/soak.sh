#!/usr/bin/env bash
# The reliability soak (RELIABILITY.md): builds shardcache and the soak driver in release mode,
# then runs shardcache in front of a fault-injecting origin under mixed load.
#   benches/soak.sh                 # 20 minutes, the figures in RELIABILITY.md
#   benches/soak.sh --minutes 2     # a quick look
# The JSON report goes to benches/soak-report.json (--out to change).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --locked --release --bin shardcache --example soak
exec target/release/examples/soak --bin target/release/shardcache "$@"
