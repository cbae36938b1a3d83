#!/usr/bin/env bash
# Runs every test: installs dependencies, builds, runs the README's quickstart as written
# (scripts/check-quickstart.py: a release build and a lab in network namespaces), then `swift test`.
# Kernel tests need root (they build throw-away network namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
swift build --build-tests
quickstart=0
python3 scripts/check-quickstart.py || quickstart=$?
status=0
swift test --skip-build "$@" || status=$?
if [ "$quickstart" -ne 0 ]; then
  echo "test.sh: the README quickstart failed (exit $quickstart); see check-quickstart's output above" >&2
  [ "$status" -ne 0 ] || status=$quickstart
fi
exit "$status"
