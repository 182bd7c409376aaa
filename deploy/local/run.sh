#!/usr/bin/env bash
# make run: the whole local stack on loopback. Installs redis-server and PostgreSQL through
# apt when missing, keeps their data under .data/, migrates, bootstraps a `dev` tenant once,
# starts one api and one worker, and prints the URL and the dev API key. Ctrl-C stops
# everything it started; a second run reuses .data/.
#
# Ports (all on 127.0.0.1; each must be free): TAPLINE_API_ADDR (127.0.0.1:8080),
# TAPLINE_WORKER_ADDR (127.0.0.1:8081), TAPLINE_PG_PORT (54329), TAPLINE_REDIS_PORT (63790).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
# shellcheck source=lib.sh
. deploy/local/lib.sh

data="$root/.data"
mkdir -p "$data/bin" "$data/log"

: "${TAPLINE_PG_PORT:=54329}"
: "${TAPLINE_REDIS_PORT:=63790}"
: "${TAPLINE_API_ADDR:=127.0.0.1:8080}"
: "${TAPLINE_WORKER_ADDR:=127.0.0.1:8081}"

tl_ensure_services

# One make run per checkout: a second one would share the first one's PostgreSQL and Redis
# and stop them when it exits. The lock lives as long as this script; every child gets the
# descriptor closed (9>&-), so a server left behind never holds it.
exec 9>"$data/run.lock"
if ! flock -n 9; then
  tl_log "another make run of this checkout is running (pid $(cat "$data/run.pid" 2>/dev/null || echo '?')); stop it first"
  exit 1
fi
echo $$ >"$data/run.pid"

tl_port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
tl_addr_port() { echo "${1##*:}"; }

# PostgreSQL runs as the postgres user when we are root (initdb refuses root). If that user
# cannot reach .data/ (a checkout under /root, say), its data lives in /var/tmp and .data/pg
# is a link to it.
pgdir="$data/pg"
if [ "$(id -u)" = 0 ] && [ ! -e "$pgdir" ] && ! runuser -u postgres -- test -x "$data"; then
  alt="/var/tmp/tapline-pg-$(printf '%s' "$root" | sha256sum | cut -c1-12)"
  mkdir -p "$alt"
  ln -s "$alt" "$pgdir"
  tl_log "postgres cannot reach $data; its data is in $alt (linked from .data/pg)"
fi
pgdir=$(readlink -f "$pgdir")

# A make run that was killed (kill -9, say) leaves its PostgreSQL and Redis running. No other
# make run uses .data/ (the lock above), so stop them; they start again below.
if [ -f "$pgdir/postmaster.pid" ] && tl_as_pg "$(tl_pg_bindir)/pg_ctl" -D "$pgdir" status >/dev/null 2>&1; then
  tl_log "stopping the PostgreSQL an earlier make run left running (.data/pg)"
  tl_pg_stop "$pgdir"
fi
if [ -f "$data/redis/redis.pid" ]; then
  rpid=$(cat "$data/redis/redis.pid")
  # Ours only if it runs in .data/redis (redis-server chdirs to --dir): the pid may be reused.
  if [ "$(readlink "/proc/$rpid/cwd" 2>/dev/null)" = "$(readlink -f "$data/redis")" ]; then
    tl_log "stopping the Redis an earlier make run left running (.data/redis)"
    kill "$rpid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$rpid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$data/redis/redis.pid"
fi

# Anything else on our ports is another stack (another checkout's make run, say): using its
# database would run this checkout's migrations and keys against someone else's data.
busy=""
for p in "$TAPLINE_PG_PORT" "$TAPLINE_REDIS_PORT" "$(tl_addr_port "$TAPLINE_API_ADDR")" "$(tl_addr_port "$TAPLINE_WORKER_ADDR")"; do
  if tl_port_busy "$p"; then busy+=" $p"; fi
done
if [ -n "$busy" ]; then
  tl_log "port(s)$busy on 127.0.0.1 already in use; stop what listens there, or pick other ports, e.g."
  tl_log "  TAPLINE_API_ADDR=127.0.0.1:8090 TAPLINE_WORKER_ADDR=127.0.0.1:8091 TAPLINE_PG_PORT=54339 TAPLINE_REDIS_PORT=63800 make run"
  exit 1
fi

started_pg="" started_redis="" pids=()
stop_all() {
  # A second signal must not cut the cleanup short: make passes its SIGTERM on to us (a
  # process-group kill arrives twice), and an impatient second Ctrl-C would leave PostgreSQL
  # and Redis running.
  trap '' INT TERM
  trap - EXIT
  local p
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  [ -n "$started_redis" ] && tl_redis_stop "$data/redis"
  [ -n "$started_pg" ] && tl_pg_stop "$pgdir"
  tl_log "Tapline stopped."
}
trap stop_all EXIT
trap 'exit 130' INT TERM

tl_log "starting PostgreSQL on 127.0.0.1:$TAPLINE_PG_PORT (data in .data/pg)"
started_pg=1
tl_pg_start "$pgdir" "$TAPLINE_PG_PORT" 9>&-
tl_pg_createdb "$TAPLINE_PG_PORT" tapline
tl_pg_app_role "$TAPLINE_PG_PORT"

tl_log "starting Redis on 127.0.0.1:$TAPLINE_REDIS_PORT (data in .data/redis)"
started_redis=1
tl_redis_start "$data/redis" "$TAPLINE_REDIS_PORT" --appendonly yes 9>&-

if [ ! -s "$data/secret-key" ]; then
  (umask 077; head -c 32 /dev/urandom | base64 >"$data/secret-key")
fi

cat >"$data/tapline.env" <<ENV
TAPLINE_DATABASE_URL=postgres://tapline_app@127.0.0.1:$TAPLINE_PG_PORT/tapline?sslmode=disable
TAPLINE_MIGRATE_DATABASE_URL=postgres://postgres@127.0.0.1:$TAPLINE_PG_PORT/tapline?sslmode=disable
TAPLINE_REDIS_URL=redis://127.0.0.1:$TAPLINE_REDIS_PORT/0
TAPLINE_SECRET_KEY=$(cat "$data/secret-key")
TAPLINE_HTTP_ADDR=$TAPLINE_API_ADDR
TAPLINE_DEV=true
TAPLINE_LOG_LEVEL=${TAPLINE_LOG_LEVEL:-info}
ENV
chmod 600 "$data/tapline.env"
set -a
# shellcheck disable=SC1091
. "$data/tapline.env"
set +a

tl_log "building api and worker"
go build -o "$data/bin/api" ./cmd/api
go build -o "$data/bin/worker" ./cmd/worker

"$data/bin/api" migrate 2>>"$data/log/api.log"

if [ ! -s "$data/dev-api-key" ]; then
  (umask 077; "$data/bin/api" bootstrap --tenant dev --email dev@localhost >"$data/dev-api-key.tmp" 2>>"$data/log/api.log")
  mv "$data/dev-api-key.tmp" "$data/dev-api-key"
fi

TAPLINE_HTTP_ADDR=$TAPLINE_WORKER_ADDR TAPLINE_NODE_NAME=worker-1 "$data/bin/worker" 2>>"$data/log/worker.log" 9>&- &
pids+=($!)
TAPLINE_NODE_NAME=api-1 "$data/bin/api" 2>>"$data/log/api.log" 9>&- &
pids+=($!)

url="http://$TAPLINE_API_ADDR"
for _ in $(seq 1 100); do
  if curl -fsS "$url/readyz" >/dev/null 2>&1; then break; fi
  for p in "${pids[@]}"; do
    kill -0 "$p" 2>/dev/null || { tl_log "a process exited; see .data/log/"; tail -n 20 "$data"/log/*.log >&2; exit 1; }
  done
  sleep 0.1
done
curl -fsS "$url/readyz" >/dev/null || { tl_log "api did not become ready; see .data/log/api.log"; exit 1; }

echo "Tapline is running at $url"
echo "Dev API key: $(cat "$data/dev-api-key")"
echo "  curl -H \"Authorization: Bearer \$(cat .data/dev-api-key)\" $url/v1/me"
echo "Logs in .data/log/; environment in .data/tapline.env. Ctrl-C stops everything."

# Wait until Ctrl-C or until a process dies.
while :; do
  for p in "${pids[@]}"; do
    if ! kill -0 "$p" 2>/dev/null; then
      tl_log "process $p exited; stopping (see .data/log/)"
      exit 1
    fi
  done
  sleep 1
done
