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
#   scripts/bench.sh render [...]    `switchyard render` as a command (JSON and YAML) against iptables-restore of its output
#   scripts/bench.sh explain [...]   `switchyard explain` on 1,000 and 10,000 Services in every mode
#                                    against what each mode's own tool prints of the same state; one answer
#                                    with the chains' index against trying every rule
#   scripts/bench.sh api [...]       server-side apply against merge patches, custom objects listed against Services
#   scripts/bench.sh scheduler [...] the scheduler and controllers at 1,000 fake nodes against direct writes
#   scripts/bench.sh kubelet [...]   pod start-up through `switchyard kubelet` on containerd against containerd alone
#   scripts/bench.sh trace-cost [...] pod start-up with the audit log (Metadata) and JSON logs that `netlab trace` reads,
#                                    against without, rounds alternating in one run
#   scripts/bench.sh readiness [...] readiness probe → EndpointSlice → traffic through `switchyard agent`, against periodSeconds
#   scripts/bench.sh authz [...]     a GET under tokens and RBAC (1,000 RoleBindings) against the same GET under AlwaysAllow
#   scripts/bench.sh webhook [...]   a GET authorised by a cached Webhook decision against the same GET under AlwaysAllow
#   scripts/bench.sh authfuzz [...]  20,000 hostile credentials through authentication: all 401, time against a valid token's
#   scripts/bench.sh secure-memory   the server idle with HTTPS, client certificates and Node,RBAC against plain HTTP
#   scripts/bench.sh ingress [...]   the ingress controller: a change until served (1 and 1,001 Ingresses), reloads under a burst,
#                                    requests and throughput through nginx against the pod directly
#   scripts/bench.sh snapshot [...]  snapshot save and restore of 10,000 Services and 100,000 objects, SQLite and etcd, against etcdctl
#   scripts/bench.sh lb [...]        the lab cloud: a LoadBalancer Service from create to the client's first answer, against a NodePort
#   scripts/bench.sh etcd [...]      writes through the server on etcd over gRPC against the JSON gateway and etcd's own puts;
#                                    failover when etcd's leader is killed (3 members)
#   scripts/bench.sh ipv6 [...]      the iptables, nftables and userspace modes on IPv6 against IPv4, same run: render, full sync,
#                                    one change, connection setup and rate, throughput (legacy iptables, 1,000 Services); the IPVS
#                                    mode in the guest: netlab/guest -- .build/release/switchyard-bench ipv6 --modes ipvs
#   scripts/bench.sh ha [...]        netlab --control-plane 3: writes after the etcd leader's and an API server's loss, a pod bound
#                                    after the leading scheduler's, against the same steps with nothing broken
#
# Each run's table goes to bench/last/NAME.md; the pages in bench/ quote the figures with their notes.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
swift build -c release --product switchyard
swift build -c release --product switchyard-bench
swift build -c release --product switchyard-cni
mkdir -p bench/last
which="${1:-all}"; shift || true
if [ "$which" = all ] || [ "$which" = iptables ]; then
  .build/release/switchyard-bench iptables --switchyard .build/release/switchyard --out bench/last/iptables.md "$@"
fi
if [ "$which" = all ] || [ "$which" = nftables ]; then
  .build/release/switchyard-bench nftables --out bench/last/nftables.md "$@"
fi
if [ "$which" = all ] || [ "$which" = userspace ]; then
  .build/release/switchyard-bench userspace --out bench/last/userspace.md "$@"
fi
if [ "$which" = all ] || [ "$which" = render ]; then
  .build/release/switchyard-bench render --switchyard .build/release/switchyard --iptables-backend legacy --out bench/last/render.md "$@"
fi
if [ "$which" = all ] || [ "$which" = explain ]; then
  .build/release/switchyard-bench explain --switchyard .build/release/switchyard --iptables-backend legacy --out bench/last/explain.md "$@"
fi
if [ "$which" = all ] || [ "$which" = api ]; then
  .build/release/switchyard-bench api --switchyard .build/release/switchyard --iterations 1000 --objects 10000 --out bench/last/api.md "$@"
fi
if [ "$which" = all ] || [ "$which" = scheduler ]; then
  .build/release/switchyard-bench scheduler --switchyard .build/release/switchyard --out bench/last/scheduler.md "$@"
fi
if [ "$which" = all ] || [ "$which" = kubelet ]; then
  .build/release/switchyard-bench kubelet --switchyard .build/release/switchyard --out bench/last/kubelet.md "$@"
fi
if [ "$which" = all ] || [ "$which" = trace-cost ]; then
  .build/release/switchyard-bench trace-cost --switchyard .build/release/switchyard --out bench/last/trace-cost.md "$@"
fi
if [ "$which" = all ] || [ "$which" = readiness ]; then
  .build/release/switchyard-bench readiness --switchyard .build/release/switchyard --out bench/last/readiness.md "$@"
fi
if [ "$which" = all ] || [ "$which" = authz ]; then
  .build/release/switchyard-bench authz --switchyard .build/release/switchyard --out bench/last/authz.md "$@"
fi
if [ "$which" = all ] || [ "$which" = webhook ]; then
  .build/release/switchyard-bench webhook --switchyard .build/release/switchyard --out bench/last/webhook.md "$@"
fi
if [ "$which" = all ] || [ "$which" = authfuzz ]; then
  .build/release/switchyard-bench authfuzz --cases 20000 --out bench/last/authfuzz.md "$@"
fi
if [ "$which" = all ] || [ "$which" = secure-memory ]; then
  .build/release/switchyard-bench secure-memory --switchyard .build/release/switchyard --out bench/last/secure-memory.md "$@"
fi
if [ "$which" = all ] || [ "$which" = ingress ]; then
  .build/release/switchyard-bench ingress --switchyard .build/release/switchyard --out bench/last/ingress.md "$@"
fi
if [ "$which" = all ] || [ "$which" = snapshot ]; then
  .build/release/switchyard-bench snapshot --out bench/last/snapshot.md "$@"
fi
if [ "$which" = all ] || [ "$which" = etcd ]; then
  .build/release/switchyard-bench etcd --switchyard .build/release/switchyard --out bench/last/etcd.md "$@"
fi
if [ "$which" = all ] || [ "$which" = ipv6 ]; then
  .build/release/switchyard-bench ipv6 --iptables-backend legacy --out bench/last/ipv6.md "$@"
fi
if [ "$which" = all ] || [ "$which" = cni ]; then
  .build/release/switchyard-bench cni --iterations 100 --out bench/last/cni.md "$@"
fi
if [ "$which" = all ] || [ "$which" = ha ]; then
  swift build -c release --product switchyard-netlab
  swift build -c release --product switchyard-echo
  .build/release/switchyard-netlab up --name habench --control-plane 3 --proxy-mode iptables
  trap '.build/release/switchyard-netlab down --name habench' EXIT
  .build/release/switchyard-netlab failover --name habench --rounds 5 "$@" | tee bench/last/ha.md
  .build/release/switchyard-netlab down --name habench
  trap - EXIT
fi
if [ "$which" = all ] || [ "$which" = lb ]; then
  swift build -c release --product switchyard-netlab
  swift build -c release --product switchyard-echo
  .build/release/switchyard-netlab up --name lbbench --proxy-mode iptables
  trap '.build/release/switchyard-netlab down --name lbbench' EXIT
  .build/release/switchyard-netlab lb-latency --name lbbench --count 30 "$@" | tee bench/last/lb.md
fi
