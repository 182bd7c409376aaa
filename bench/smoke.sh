#!/usr/bin/env bash
# Runs every benchmark of bench/ and internal/inspector once at its smallest size, so none
# rots; make test calls it inside deploy/local/test-services.sh (it needs TEST_DATABASE_URL
# and TEST_REDIS_URL). About half a minute after compiling.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
exec "${GO:-go}" test -count=1 -run '^$' -bench . -benchtime 1x -timeout 10m ./bench/... ./internal/inspector/
