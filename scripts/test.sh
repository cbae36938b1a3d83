#!/usr/bin/env bash
# Runs every test: installs dependencies, builds, then `swift test`.
# Kernel tests need root (they build throw-away network namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
swift build --build-tests
swift test --skip-build "$@"
