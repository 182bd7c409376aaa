#!/usr/bin/env bash
# deploy/validate.sh — validate every deployment file offline; `make validate-manifests`.
#
#   Dockerfile       BuildKit's parser and build checks (deploy/validate, `dockerfile`)
#   Compose          compose-go: the Compose spec schema, interpolation, env files,
#                    depends_on; then Tapline's rules (`compose`)
#   Kubernetes       `kustomize build` of the base and every overlay, then kubeconform -strict
#                    against JSON schemas generated from Kubernetes' own OpenAPI document,
#                    then Tapline's rules (`k8s-policy`)
#   configuration    every container's resolved environment (Compose and Kubernetes) goes
#                    through the real loader, internal/config, via the api binary
#   self-check       deliberately broken inputs must make each step fail
#
# Offline: tools and schemas come from the Go module proxy only, pinned below, and are
# cached in $TAPLINE_TOOLS_CACHE (default ~/.cache/tapline/deploy-tools). The schemas are
# api/openapi-spec/swagger.json of the Go module k8s.io/kubernetes, converted once into
# kubeconform's layout by deploy/validate (`k8s-schemas`). Exits non-zero on any problem.
set -euo pipefail

KUBECONFORM_VERSION=v0.8.0
KUSTOMIZE_VERSION=v5.8.2
# Oldest and newest Kubernetes the manifests are checked against.
K8S_VERSIONS=${TAPLINE_K8S_VERSIONS:-"1.33.4 1.36.3"}
# Bump when deploy/validate's k8s-schemas output changes, so cached schemas are regenerated.
SCHEMA_FORMAT=1

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
GO=${GO:-go}
export GOWORK=off GOFLAGS= CGO_ENABLED=0
if [ -n "${HOME:-}" ] && [ -d "$HOME" ]; then
  cache=${TAPLINE_TOOLS_CACHE:-$HOME/.cache/tapline/deploy-tools}
else
  cache=${TAPLINE_TOOLS_CACHE:-$root/.data/tools}
fi
mkdir -p "$cache"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
start=$SECONDS
checks=0 negatives=0

log() { printf 'validate: %s\n' "$*" >&2; }
die() {
  printf 'validate: FAIL: %s\n' "$*" >&2
  exit 1
}
pass() {
  checks=$((checks + 1))
  log "ok   $*"
}

# --- tools -------------------------------------------------------------------------------
install_tool() { # name module version
  local dir="$cache/$1-$3"
  if [ ! -x "$dir/$1" ]; then
    log "installing $2@$3 into $dir"
    GOBIN="$dir" "$GO" install "$2@$3" || die "go install $2@$3"
  fi
  printf '%s\n' "$dir/$1"
}
kubeconform=$(install_tool kubeconform github.com/yannh/kubeconform/cmd/kubeconform "$KUBECONFORM_VERSION")
kustomize=$(install_tool kustomize sigs.k8s.io/kustomize/kustomize/v5 "$KUSTOMIZE_VERSION")
deploycheck="$work/deploycheck"
(cd deploy/validate && "$GO" build -mod=readonly -o "$deploycheck" .) || die "build deploy/validate"
api="$work/api"
"$GO" build -o "$api" ./cmd/api || die "build cmd/api"

# --- Kubernetes JSON schemas -------------------------------------------------------------
schemas="$cache/schemas-f$SCHEMA_FORMAT"
for v in $K8S_VERSIONS; do
  dir="$schemas/v$v-standalone-strict"
  [ -s "$dir/deployment-apps-v1.json" ] && continue
  log "generating Kubernetes $v schemas from k8s.io/kubernetes@v$v (Go module proxy)"
  mod="$work/modcache-$v"
  # A private module cache: the module is 100 MB unpacked and only one file is used.
  dl=$(cd "$work" && GOMODCACHE="$mod" GOFLAGS=-modcacherw "$GO" mod download -json "k8s.io/kubernetes@v$v") ||
    die "go mod download k8s.io/kubernetes@v$v"
  src=$(printf '%s\n' "$dl" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [ -s "$src/api/openapi-spec/swagger.json" ] || die "k8s.io/kubernetes@v$v has no api/openapi-spec/swagger.json"
  rm -rf "$dir.tmp.$$"
  "$deploycheck" k8s-schemas -swagger "$src/api/openapi-spec/swagger.json" -out "$dir.tmp.$$" >/dev/null ||
    die "k8s-schemas for Kubernetes $v"
  rm -rf "$dir" && mv "$dir.tmp.$$" "$dir"
  rm -rf "$mod"
done
schema_location="$schemas/{{ .NormalizedKubernetesVersion }}-standalone{{ .StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json"

kubeconform_check() { # file: every resource valid against every Kubernetes version
  local v out
  for v in $K8S_VERSIONS; do
    if ! out=$("$kubeconform" -strict -summary -kubernetes-version "$v" -schema-location "$schema_location" "$1" 2>&1); then
      printf 'Kubernetes %s: %s\n' "$v" "$out" >&2
      return 1
    fi
  done
}

# The examples' TAPLINE_SECRET_KEY=CHANGE_ME… is refused by the loader on purpose, so an
# install that forgets to replace it stops at start; the checks below put a real key in its
# place (and the self-check makes sure the placeholder itself is refused).
sample_key=$(head -c 32 /dev/urandom | base64)
config_check() { # env file: the real configuration loader must accept it
  local kv out i
  mapfile -t kv <"$1"
  for i in "${!kv[@]}"; do
    [[ ${kv[$i]} == TAPLINE_SECRET_KEY=CHANGE_ME* ]] && kv[$i]="TAPLINE_SECRET_KEY=$sample_key"
  done
  # config.Load runs before the command is looked at: a valid configuration gets as far as
  # "unknown command"; an invalid one stops at "invalid configuration: VAR: reason".
  out=$(env -i "${kv[@]}" "$api" tapline-validate-config 2>&1) && return 1
  if ! grep -q 'unknown command' <<<"$out"; then
    printf '%s: %s\n' "$(basename "$1")" "$out" >&2
    return 1
  fi
}

raw_config_check() { # env file, taken as it is: prints what the loader says
  local kv
  mapfile -t kv <"$1"
  env -i "${kv[@]}" "$api" tapline-validate-config
}

# --- Dockerfile --------------------------------------------------------------------------
"$deploycheck" dockerfile deploy/docker/Dockerfile >/dev/null || die "deploy/docker/Dockerfile"
pass "deploy/docker/Dockerfile (+ Dockerfile.dockerignore)"

# --- Compose -----------------------------------------------------------------------------
compose_check() { # compose file, tapline env, datastores env, env-out dir
  "$deploycheck" compose -quiet -env "TAPLINE_ENV_FILE=$2" -env "TAPLINE_DATASTORES_ENV_FILE=$3" -env-out "$4" "$1"
}
compose_check deploy/compose/compose.yaml "$root/deploy/compose/tapline.env.example" \
  "$root/deploy/compose/datastores.env.example" "$work/env/compose-example" || die "deploy/compose/compose.yaml"
pass "deploy/compose/compose.yaml with the example env files"
mkdir -p "$work/init-env"
sh deploy/compose/init-env.sh "$work/init-env" >/dev/null || die "deploy/compose/init-env.sh"
! cat "$work/init-env/tapline.env" "$work/init-env/datastores.env" | grep -v '^#' | grep -q CHANGE_ME ||
  die "init-env.sh left a CHANGE_ME"
compose_check deploy/compose/compose.yaml "$work/init-env/tapline.env" "$work/init-env/datastores.env" \
  "$work/env/compose-init" || die "deploy/compose/compose.yaml with init-env.sh's files"
pass "deploy/compose/init-env.sh output loads"

# --- Kubernetes --------------------------------------------------------------------------
mkdir -p "$work/k8s"
targets=(deploy/k8s/base)
for o in deploy/k8s/overlays/*/; do targets+=("${o%/}"); done
for t in "${targets[@]}"; do
  out="$work/k8s/$(basename "$t").yaml"
  "$kustomize" build "$t" >"$out" || die "kustomize build $t"
  kubeconform_check "$out" || die "$t: kubeconform"
  "$deploycheck" k8s-policy -env-out "$work/env/k8s" "$out" >/dev/null || die "$t: Tapline rules"
  pass "$t (kustomize build, kubeconform -strict on Kubernetes ${K8S_VERSIONS// /, }, Tapline rules)"
done

# --- configuration -----------------------------------------------------------------------
n=0
for f in "$work"/env/*/*.env; do
  config_check "$f" || die "configuration in $(basename "$(dirname "$f")")/$(basename "$f") is refused by internal/config"
  n=$((n + 1))
done
[ "$n" -gt 0 ] || die "no container environment was extracted"
pass "$n container environments accepted by internal/config"

# --- self-check: broken inputs must fail -------------------------------------------------
expect_fail() { # description, required messages ("a;;b"), command...: the command must fail, saying each
  local what=$1 want=$2 out msg first=""
  shift 2
  if out=$("$@" 2>&1); then
    printf '%s\n' "$out" >&2
    die "self-check: $what was accepted"
  fi
  IFS=$'\n' read -r -d '' -a msgs < <(printf '%s' "${want//;;/$'\n'}" && printf '\0')
  for msg in "${msgs[@]}"; do
    if ! grep -qF -- "$msg" <<<"$out"; then
      printf '%s\n' "$out" >&2
      die "self-check: $what failed, but without saying \"$msg\""
    fi
    [ -n "$first" ] || first=$(grep -m1 -F -- "$msg" <<<"$out" | sed 's/^[[:space:]]*//' | cut -c1-150)
  done
  negatives=$((negatives + 1))
  log "ok   self-check: $what is refused: $first"
}
neg="$work/negative"
mkdir -p "$neg"

cat >"$neg/schema.yaml" <<'YAML'
apiVersion: apps/v1
kind: Deployment
metadata:
  name: broken
spec:
  replicas: "two"
  selector:
    matchLabels: {app: broken}
  template:
    metadata:
      labels: {app: broken}
    spec:
      containers:
        - name: broken
          image: tapline
          imagePullPolcy: Always
YAML
expect_fail "a Deployment with a string replica count and a misspelt field (kubeconform)" \
  "got string, want integer;;additional properties 'imagePullPolcy' not allowed" kubeconform_check "$neg/schema.yaml"

sed -e 's/terminationGracePeriodSeconds: 30/terminationGracePeriodSeconds: 10/' \
  -e '/- 10.0.0.0\/8/d' "$work/k8s/single-redis.yaml" >"$neg/policy.yaml"
cmp -s "$neg/policy.yaml" "$work/k8s/single-redis.yaml" && die "self-check: the policy mutation changed nothing"
expect_fail "a worker killed before it drains and egress to 10.0.0.0/8 (k8s-policy)" \
  "terminationGracePeriodSeconds 10 is shorter;;does not except 10.0.0.0/8" "$deploycheck" k8s-policy "$neg/policy.yaml"

mkdir -p "$neg/kustomize"
printf 'resources:\n  - ../../nowhere\n  - deployment.yaml\n' >"$neg/kustomize/kustomization.yaml"
expect_fail "a kustomization naming missing files (kustomize build)" "accumulating resources" "$kustomize" build "$neg/kustomize"

cp -r deploy/compose "$neg/compose"
sed -i -e 's/stop_grace_period: 30s/stop_grace_period: 5s/' -e 's/condition: service_completed_successfully/condition: service_started/' \
  "$neg/compose/compose.yaml"
expect_fail "a worker with a 5s stop_grace_period that does not wait for migrate (compose)" \
  "stop_grace_period 5s is shorter;;must depend on migrate" compose_check "$neg/compose/compose.yaml" "$root/deploy/compose/tapline.env.example" \
  "$root/deploy/compose/datastores.env.example" "$neg/compose-env"
printf 'services:\n  api:\n    image: tapline\n    depends_on: [nosuch]\n' >"$neg/compose/broken.yaml"
expect_fail "a Compose file with an unknown dependency (compose-go)" \
  'depends on undefined service "nosuch"' compose_check "$neg/compose/broken.yaml" /dev/null /dev/null "$neg/compose-env"

cp deploy/docker/Dockerfile.dockerignore "$neg/Dockerfile.dockerignore"
sed -e 's/^USER nonroot:nonroot/USER root/' -e 's/^COPY --from=build/COPPY --from=build/' deploy/docker/Dockerfile >"$neg/Dockerfile"
expect_fail "a Dockerfile with an unknown instruction (BuildKit parser)" "unknown instruction: COPPY" "$deploycheck" dockerfile "$neg/Dockerfile"
sed -e 's/^USER nonroot:nonroot/USER root/' -e 's/ AS build$/ as build/' \
  deploy/docker/Dockerfile >"$neg/Dockerfile"
expect_fail "a Dockerfile running as root with inconsistent casing (BuildKit checks, rules)" \
  "FromAsCasing;;USER must be a non-root user" "$deploycheck" dockerfile "$neg/Dockerfile"

cp "$work/env/k8s/single-redis_tapline-worker_worker.env" "$neg/config.env"
printf 'TAPLINE_LEASE_TTL=10\nTAPLINE_REDIS_URL=redis://a:1,b:2\n' >>"$neg/config.env"
expect_fail "a lease TTL without a unit and two hosts in a redis:// URL (internal/config)" \
  "TAPLINE_LEASE_TTL: want a duration;;TAPLINE_REDIS_URL: several hosts" config_check "$neg/config.env"

grep -v '^TAPLINE_SECRET_KEY=' "$work/env/k8s/single-redis_tapline-worker_worker.env" >"$neg/placeholder.env"
printf 'TAPLINE_SECRET_KEY=CHANGE_ME\n' >>"$neg/placeholder.env"
expect_fail "the example's placeholder secret key (internal/config)" \
  "TAPLINE_SECRET_KEY: secretbox: invalid key configuration" raw_config_check "$neg/placeholder.env"

log "all $checks checks passed; $negatives broken inputs refused as expected ($((SECONDS - start))s)"
