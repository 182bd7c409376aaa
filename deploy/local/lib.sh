# shellcheck shell=bash
# Shared helpers for the local stack (make run) and the throw-away test services (make test).
# Sourced, never executed. Everything binds to loopback.

tl_log() { printf '%s\n' "$*" >&2; }

# tl_pg_bindir prints the directory holding initdb/pg_ctl/postgres.
tl_pg_bindir() {
  local d
  for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/initdb" ] && { echo "$d"; return 0; }
  done
  d=$(dirname "$(command -v initdb 2>/dev/null || true)")
  [ -x "$d/initdb" ] && { echo "$d"; return 0; }
  return 1
}

tl_apt_updated=""
tl_apt_install() {
  if [ "$(id -u)" != 0 ]; then
    tl_log "missing $*; install it (apt-get install -y $*) or run as root"
    return 1
  fi
  if [ -z "$tl_apt_updated" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    tl_apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
}

# tl_ensure_services installs redis-server and PostgreSQL through apt when missing.
# --chromium also installs Debian's chromium (the web inspector's browser tests need it).
tl_ensure_services() {
  local pkgs=()
  if [ "${1:-}" = --chromium ] && [ ! -x /usr/bin/chromium ]; then
    pkgs+=(chromium)
  fi
  command -v redis-server >/dev/null 2>&1 || pkgs+=(redis-server)
  command -v redis-cli >/dev/null 2>&1 || pkgs+=(redis-tools)
  tl_pg_bindir >/dev/null 2>&1 || pkgs+=(postgresql)
  command -v psql >/dev/null 2>&1 || pkgs+=(postgresql-client)
  if [ ${#pkgs[@]} -gt 0 ]; then
    tl_log "installing ${pkgs[*]} through apt"
    tl_apt_install "${pkgs[@]}"
  fi
  # Debian's postgresql package starts a cluster on 5432; we never use it, but don't fight it.
  tl_pg_bindir >/dev/null || { tl_log "PostgreSQL binaries not found"; return 1; }
}

# tl_free_port prints a free TCP port on 127.0.0.1.
tl_free_port() {
  python3 - <<'PY' 2>/dev/null && return 0
import socket
s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()
PY
  # Fallback without python: pick a random high port that nothing listens on.
  local p
  while :; do
    p=$(( (RANDOM % 20000) + 30000 ))
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return 0; }
  done
}

# tl_as_pg runs a command as the postgres user when we are root (initdb refuses root).
tl_as_pg() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

# tl_pg_start DATADIR PORT: initialise (once) and start PostgreSQL on 127.0.0.1:PORT.
# Extra server settings may be passed in TL_PG_OPTS.
tl_pg_start() {
  local dir=$1 port=$2 bin
  bin=$(tl_pg_bindir)
  mkdir -p "$dir"
  if [ "$(id -u)" = 0 ]; then
    chown postgres:postgres "$dir"
    chmod 700 "$dir"
  fi
  if [ ! -s "$dir/PG_VERSION" ]; then
    tl_as_pg "$bin/initdb" -D "$dir" -A trust -U postgres -E UTF8 --no-instructions >/dev/null
  fi
  tl_as_pg "$bin/pg_ctl" -D "$dir" -w -t 60 -l "$dir/server.log" \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=300 ${TL_PG_OPTS:-}" start >/dev/null
}

tl_pg_stop() {
  local dir=$1 bin
  bin=$(tl_pg_bindir)
  [ -f "$dir/postmaster.pid" ] && tl_as_pg "$bin/pg_ctl" -D "$dir" -w -m fast stop >/dev/null 2>&1 || true
}

# tl_pg_createdb PORT NAME: create a database if it does not exist.
tl_pg_createdb() {
  local port=$1 name=$2
  if ! psql -h 127.0.0.1 -p "$port" -U postgres -tAc "select 1 from pg_database where datname='$name'" postgres | grep -q 1; then
    psql -h 127.0.0.1 -p "$port" -U postgres -qc "create database \"$name\"" postgres >/dev/null
  fi
}

# tl_pg_app_role PORT [PASSWORD]: create (or update) the login role tapline_app that the api
# and worker connect as. It owns nothing and cannot bypass row-level security; migrations,
# run as postgres, own the tables and grant it DML (migrations/0010_rls.up.sql).
tl_pg_app_role() {
  local port=$1 pass=${2:-} sql
  if [ -n "$pass" ]; then
    sql="login nosuperuser nobypassrls password '$pass'"
  else
    sql="login nosuperuser nobypassrls"
  fi
  psql -h 127.0.0.1 -p "$port" -U postgres -v ON_ERROR_STOP=1 -qc "
    do \$\$ begin
      if not exists (select 1 from pg_roles where rolname = 'tapline_app') then
        create role tapline_app $sql;
      else
        alter role tapline_app $sql;
      end if;
    end \$\$;" postgres >/dev/null
}

# tl_redis_start DIR PORT [extra args...]: start a redis-server on 127.0.0.1:PORT, daemonized.
tl_redis_start() {
  local dir=$1 port=$2
  shift 2
  mkdir -p "$dir"
  redis-server --bind 127.0.0.1 --port "$port" --dir "$dir" --daemonize yes \
    --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" "$@" >/dev/null
  local i
  for i in $(seq 1 100); do
    redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  tl_log "redis-server on port $port did not start; see $dir/redis.log"
  [ -f "$dir/redis.pid" ] && kill "$(cat "$dir/redis.pid")" 2>/dev/null
  return 1
}

# tl_redis_start_free DIR [extra args...]: start redis-server on a free port, retrying when
# another process takes the port between the check and the bind; prints the port.
tl_redis_start_free() {
  local dir=$1 p try
  shift
  for try in 1 2 3 4 5; do
    p=$(tl_free_port)
    if tl_redis_start "$dir" "$p" "$@" 2>/dev/null; then
      echo "$p"
      return 0
    fi
    rm -f "$dir/nodes.conf"
  done
  tl_log "redis-server would not start; see $dir/redis.log"
  return 1
}

tl_redis_stop() {
  local dir=$1
  if [ -f "$dir/redis.pid" ]; then
    kill "$(cat "$dir/redis.pid")" 2>/dev/null || true
    rm -f "$dir/redis.pid"
  fi
}

# tl_cluster_start DIR: start a 3-master Redis Cluster on free loopback ports and print
# the comma-separated seed addresses.
tl_cluster_start() {
  local dir=$1 ports=() addrs=() p i
  for i in 1 2 3; do
    p=$(tl_redis_start_free "$dir/node$i" --save '' --appendonly no \
      --cluster-enabled yes --cluster-config-file "$dir/node$i/nodes.conf" --cluster-node-timeout 2000)
    ports+=("$p")
    addrs+=("127.0.0.1:$p")
  done
  redis-cli --cluster create "${addrs[@]}" --cluster-replicas 0 --cluster-yes >"$dir/create.log" 2>&1 || {
    tl_log "redis-cli --cluster create failed; see $dir/create.log"; return 1; }
  for i in $(seq 1 100); do
    if redis-cli -h 127.0.0.1 -p "${ports[0]}" cluster info 2>/dev/null | grep -q 'cluster_state:ok'; then
      (IFS=,; echo "${addrs[*]}")
      return 0
    fi
    sleep 0.1
  done
  tl_log "redis cluster did not become ready"
  return 1
}

tl_cluster_stop() {
  local dir=$1 i
  for i in 1 2 3; do tl_redis_stop "$dir/node$i"; done
}
