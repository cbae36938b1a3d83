#!/usr/bin/env bash
# Runs every test: installs dependencies, builds, runs the README's quickstart as written
# (scripts/check-quickstart.py: a release build and a lab in network namespaces), then `swift test`.
# Kernel tests need root (they build throw-away network namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."
# The tests' etcd servers (NetnsKit's EtcdProcess) stop with their test, also when it fails; a
# test process that crashes cannot stop them, and they are left to init: those are stopped here
# when this script ends, whatever the outcome (another run's, whose test process lives, are not).
stop_orphaned_etcd() {
  for pid in $(pgrep -f '^/usr/bin/etcd --name t --data-dir /tmp/sy-etcd-' || true); do
    if [ "$(ps -o ppid= -p "$pid" | tr -d ' ')" = 1 ]; then
      dir=$(tr '\0' '\n' < "/proc/$pid/cmdline" | sed -n '/^--data-dir$/{n;p}')
      kill "$pid" 2>/dev/null || true
      case "$dir" in /tmp/sy-etcd-*) rm -rf "$dir" ;; esac
    fi
  done
}
# The node tests' containerd, its shims and registry (LabServices) likewise: those left to init
# by a crashed test process go, with their namespace and directory.
stop_orphaned_node_services() {
  for pid in $(pgrep -f '(containerd --config|docker-registry serve) /tmp/sy-node-' || true); do
    [ "$(ps -o ppid= -p "$pid" | tr -d ' ')" = 1 ] && kill "$pid" 2>/dev/null || true
  done
  sleep 1
  for pid in $(pgrep -f 'containerd-shim-runc-v2 .*-address /run/sy-ctd-' || true); do
    sock=$(tr '\0' '\n' < "/proc/$pid/cmdline" | sed -n '/^-address$/{n;p}')
    # A shim whose containerd still listens belongs to a live test.
    ss -xlH 2>/dev/null | grep -qF "$sock " && continue
    kill -9 "$pid" 2>/dev/null || true
  done
  for ns in $(ip netns list 2>/dev/null | awk '/^sy-node-/{print $1}'); do
    [ -z "$(ip netns pids "$ns" 2>/dev/null)" ] && ip netns del "$ns" 2>/dev/null || true
  done
}
cleanup() { stop_orphaned_etcd; stop_orphaned_node_services; }
trap cleanup EXIT
bash scripts/setup.sh
swift build --build-tests
quickstart=0
python3 scripts/check-quickstart.py || quickstart=$?
# A watchdog: should the test process print nothing for ten minutes (the longest test prints
# within four), every thread's stack goes to the log and the run ends there, failed, instead of
# at CI's time limit with nothing to read.
status=0
out=$(mktemp /tmp/sy-test-out.XXXXXX)
swift test --skip-build "$@" > >(tee "$out") 2>&1 &
tests=$!
(
  while sleep 60; do
    kill -0 "$tests" 2>/dev/null || exit 0
    [ $(( $(date +%s) - $(stat -c %Y "$out") )) -ge 600 ] || continue
    echo "test.sh: no test output for ten minutes; the test process's threads:" >&2
    for pid in $(pgrep -f 'PackageTests.xctest|swift-testing' || true); do
      gdb -p "$pid" --batch -ex "info threads" -ex "thread apply all bt 12" 2>&1 | grep -v '^\[New LWP' >&2 || true
    done
    pkill -f 'PackageTests.xctest' || true
    exit 0
  done
) &
watchdog=$!
wait "$tests" || status=$?
kill "$watchdog" 2>/dev/null || true
rm -f "$out"
if [ "$quickstart" -ne 0 ]; then
  echo "test.sh: the README quickstart failed (exit $quickstart); see check-quickstart's output above" >&2
  [ "$status" -ne 0 ] || status=$quickstart
fi
exit "$status"
