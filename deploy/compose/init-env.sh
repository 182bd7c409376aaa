#!/usr/bin/env sh
# Create deploy/compose/tapline.env and datastores.env from the examples, with a random value
# for every CHANGE_ME. Refuses to overwrite existing files. Usage: init-env.sh [DIR]
set -eu
src=$(cd "$(dirname "$0")" && pwd)
dst=${1:-$src}
for f in tapline.env datastores.env; do
  if [ -e "$dst/$f" ]; then
    echo "init-env.sh: $dst/$f exists; not overwriting" >&2
    exit 1
  fi
done
hex() { head -c "$1" /dev/urandom | od -An -tx1 | tr -d ' \n'; }
app=$(hex 24) owner=$(hex 24) pg=$(hex 24) redis=$(hex 24)
key=$(head -c 32 /dev/urandom | base64 | tr -d '\n')
umask 077
for f in tapline.env datastores.env; do
  sed -e "s|CHANGE_ME_APP_PASSWORD|$app|g" \
      -e "s|CHANGE_ME_OWNER_PASSWORD|$owner|g" \
      -e "s|CHANGE_ME_POSTGRES_PASSWORD|$pg|g" \
      -e "s|CHANGE_ME_REDIS_PASSWORD|$redis|g" \
      -e "s|CHANGE_ME_SECRET_KEY|$key|g" \
      "$src/$f.example" >"$dst/$f"
done
echo "wrote $dst/tapline.env and $dst/datastores.env (mode 600)"
