#!/bin/sh
# Creates the PostgreSQL passwords docker-compose.yml reads as secrets, once:
#   deploy/compose/secrets/postgres-superuser-password   the postgres superuser (the postgres service only)
#   deploy/compose/secrets/spiffe-broker-db-password     the broker's own role (postgres and spiffe-broker)
# The directory is 0700 and git-ignored. The files are 0644 because Compose bind-mounts file secrets
# with their host owner and mode, and the containers reading them run as uids 999 and 10001; the
# directory keeps other users of this host out. Existing files are kept (the database was initialised
# with them); `docker compose down -v` and deleting the directory start over.
set -eu

DIR=$(cd "$(dirname "$0")" && pwd)/secrets
mkdir -p "$DIR"
chmod 0700 "$DIR"

for name in postgres-superuser-password spiffe-broker-db-password; do
  if [ -e "$DIR/$name" ]; then
    echo "make-secrets: kept $DIR/$name"
    continue
  fi
  # 32 random bytes, URL-safe base64 without padding: no quoting issues anywhere.
  head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n' > "$DIR/$name.tmp"
  chmod 0644 "$DIR/$name.tmp"
  mv "$DIR/$name.tmp" "$DIR/$name"
  echo "make-secrets: created $DIR/$name"
done
