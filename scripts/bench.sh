#!/usr/bin/env bash
# Measures the figures in the README (release build, as root). Takes several minutes:
# the iptables mode's full sync of 10,000 services alone takes minutes on these machines.
#   scripts/bench.sh                 both benchmarks
#   scripts/bench.sh iptables [...]  the iptables mode against iptables-restore
#                                    (--iptables-backend legacy: Debian's legacy iptables-restore,
#                                    which loads 10,000 services in seconds where the nf_tables one
#                                    takes over an hour here)
#   scripts/bench.sh nftables [...]  the nftables mode (both layouts) against the iptables mode
#   scripts/bench.sh userspace [...] the userspace mode's data path against direct, socat and the iptables mode
#   scripts/bench.sh cni [...]       CNI ADD/DEL latency of our bridge + host-local against the reference plugins
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
swift build -c release --product switchyard
swift build -c release --product switchyard-bench
swift build -c release --product switchyard-cni
mkdir -p bench
which="${1:-all}"; shift || true
if [ "$which" = all ] || [ "$which" = iptables ]; then
  .build/release/switchyard-bench iptables --switchyard .build/release/switchyard --out bench/iptables.md "$@"
fi
if [ "$which" = all ] || [ "$which" = nftables ]; then
  .build/release/switchyard-bench nftables --out bench/nftables.md "$@"
fi
if [ "$which" = all ] || [ "$which" = userspace ]; then
  .build/release/switchyard-bench userspace --out bench/userspace.md "$@"
fi
if [ "$which" = all ] || [ "$which" = cni ]; then
  .build/release/switchyard-bench cni --iterations 100 --out bench/cni.md "$@"
fi
