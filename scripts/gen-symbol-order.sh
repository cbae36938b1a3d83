#!/usr/bin/env bash
# Writes link/switchyard.order: the functions the API server runs to start and to answer
# kubectl's first requests (discovery, lists), plain and secured, in the order first run. The
# release link puts them first and together (lld's --symbol-ordering-file), so that an idle
# server has fewer of its code pages resident (bench/server.md#serving-over-tls-idle-memory).
# Run it again when the serving path changes much (a missing or renamed function only leaves it
# where it was: the order is a hint). As root; needs valgrind (installed if missing) and kubectl.
#   scripts/gen-symbol-order.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends valgrind >/dev/null; }
KUBECTL=${KUBECTL:-$(command -v kubectl || echo /usr/lib/google-cloud-sdk/bin/kubectl)}
swift build -c release --product switchyard
work=$(mktemp -d /tmp/sy-order.XXXXXX)
trap 'pkill -f "$work/switchyard server" 2>/dev/null || true; rm -rf "$work"' EXIT
# valgrind cannot read the toolchain's DWARF 5; the symbol table is what is needed.
cp .build/release/switchyard "$work/switchyard"
llvm-strip --strip-debug "$work/switchyard" 2>/dev/null || strip --strip-debug "$work/switchyard"
for mode in secure plain; do
  data="$work/data-$mode"; mkdir -p "$data"
  extra=()
  [ "$mode" = secure ] && extra=(--secure-port 0 --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction)
  valgrind --tool=callgrind --demangle=no --callgrind-out-file="$work/cg-$mode.%p" \
    "$work/switchyard" server --data-dir "$data" --port 0 --log-level warning --disable-scheduler --disable-controller-manager \
    --disable-admission-plugins ServiceAccount "${extra[@]}" >/dev/null 2>"$work/valgrind-$mode.log" &
  for _ in $(seq 600); do [ -f "$data/kubeconfig" ] && break; sleep 0.2; done
  [ -f "$data/kubeconfig" ] || { echo "the server did not start under valgrind: $work/valgrind-$mode.log" >&2; cat "$work/valgrind-$mode.log" >&2; exit 1; }
  sleep 2
  for p in /version /api /apis /api/v1 /apis/apps/v1 /api/v1/namespaces /api/v1/namespaces/default/services; do
    "$KUBECTL" --kubeconfig "$data/kubeconfig" get --raw "$p" --request-timeout 120s >/dev/null
  done
  sleep 2
  # What ran up to here, not the shutdown.
  callgrind_control -d "$work/switchyard" >/dev/null
  sleep 3
  pkill -TERM -f "$work/switchyard server --data-dir $data" || true
  wait || true
done
nm --defined-only "$work/switchyard" | awk '$2 ~ /^[tTwW]$/ {print $3}' > "$work/text-symbols"
python3 - "$work" > link/switchyard.order <<'EOF'
import glob, re, sys
work = sys.argv[1]
have = set(open(work + "/text-symbols").read().split("\n"))
seen, out = set(), []
# The dumps taken while serving (NAME.PID.1), in the order each function was first met.
for f in sorted(glob.glob(work + "/cg-secure.*.1")) + sorted(glob.glob(work + "/cg-plain.*.1")):
    for line in open(f, errors="replace"):
        m = re.match(r"^c?fn=\(\d+\) (.*)$", line.rstrip("\n"))
        if m and m.group(1) in have and m.group(1) not in seen:
            seen.add(m.group(1)); out.append(m.group(1))
if len(out) < 1000:
    sys.exit("only %d functions recorded: the profile failed" % len(out))
print("\n".join(out))
EOF
echo "link/switchyard.order: $(wc -l < link/switchyard.order) functions; relink with: rm .build/release/switchyard && swift build -c release --product switchyard" >&2
