#!/usr/bin/env bash
# Starts throw-away PostgreSQL, redis-server and a 3-master Redis Cluster on free loopback
# ports, exports TEST_DATABASE_URL, TEST_REDIS_URL and TEST_REDIS_CLUSTER_ADDRS, runs the
# given command, and tears everything down however the command ends.
#
#   deploy/local/test-services.sh go test -race ./...
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"

# Chromium too: the web inspector's browser tests (internal/webtest) fail without it.
tl_ensure_services --chromium

work=$(mktemp -d /tmp/tapline-test.XXXXXX)
chmod 755 "$work"
pgdir="$work/pg"
cleanup() {
  tl_pg_stop "$pgdir"
  tl_redis_stop "$work/redis"
  tl_cluster_stop "$work/cluster"
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

pgport=$(tl_free_port)
TL_PG_OPTS="-c fsync=off -c synchronous_commit=off -c full_page_writes=off" tl_pg_start "$pgdir" "$pgport"
tl_pg_createdb "$pgport" tapline_test
# The application role tests connect as (internal/dbtest): trusted on loopback, no password.
tl_pg_app_role "$pgport"

redisport=$(tl_redis_start_free "$work/redis" --save '' --appendonly no)

cluster=$(tl_cluster_start "$work/cluster")

export TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$pgport/tapline_test?sslmode=disable"
export TEST_REDIS_URL="redis://127.0.0.1:$redisport/0"
export TEST_REDIS_CLUSTER_ADDRS="$cluster"
# Tests that restart a server (readiness, Redis loss) need to know how.
export TEST_SERVICES_DIR="$work"
export TEST_PG_BINDIR
TEST_PG_BINDIR=$(tl_pg_bindir)
tl_log "test services: postgres :$pgport, redis :$redisport, cluster $cluster"

"$@"
