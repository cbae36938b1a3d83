#!/usr/bin/env bash
# Measures the figures in the README (release build, as root). Takes a few minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
swift build -c release --product switchyard
swift build -c release --product switchyard-bench
mkdir -p bench
.build/release/switchyard-bench --switchyard .build/release/switchyard --out bench/iptables.md "$@"
