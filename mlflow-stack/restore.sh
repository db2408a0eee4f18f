#!/usr/bin/env bash
# Restore a backup made by backup.sh: both PostgreSQL databases (each in one transaction, both or
# neither) and the artifacts. Stop the MLflow server first (supervisorctl stop mlflow / systemctl
# stop mlflow) and start it again afterwards. Run as root on the PostgreSQL host.
#
#   mlflow-stack/restore.sh [--env FILE] BACKUP_DIR
set -euo pipefail

ENV_FILE=/etc/mlflow/backup.env
if [[ "${1:-}" == "--env" ]]; then ENV_FILE=$2; shift 2; fi
SRC=${1:?usage: restore.sh [--env FILE] BACKUP_DIR}

if [[ ! -r "$ENV_FILE" ]]; then
  echo "restore.sh: cannot read $ENV_FILE (run as root on the services host, or pass --env FILE)" >&2
  exit 2
fi
for f in tracking.dump auth.dump artifacts.tar.gz; do
  [[ -f "$SRC/$f" ]] || { echo "restore.sh: $SRC/$f is missing: not a backup.sh folder" >&2; exit 2; }
done
set -a
# shellcheck disable=SC1090
. "$ENV_FILE"
set +a

# Both databases or neither: each dump is restored, in one transaction, into a fresh database
# beside the live one (<db>_incoming); only when both have restored are they swapped in. A
# restore that fails half-way drops what it made and leaves the live databases as they were.
as_postgres() {  # the postgres superuser over the local socket (peer auth), not over TCP
  runuser -u postgres -- env -u PGHOST -u PGPASSWORD "$@" --no-password --port="$PGPORT"
}
prepare_db() {  # prepare_db DB USER PASSWORD FILE
  local db=$1 user=$2 password=$3 file=$4
  as_postgres dropdb --if-exists "${db}_incoming"
  as_postgres createdb --owner="$user" --encoding=UTF8 --template=template0 "${db}_incoming"
  PGPASSWORD=$password pg_restore --no-password --host="$PGHOST" --port="$PGPORT" \
    --username="$user" --dbname="${db}_incoming" --no-owner --role="$user" --single-transaction \
    --exit-on-error "$SRC/$file"
}
swap_db() {  # swap_db DB: DB_incoming becomes DB, the old one is dropped
  local db=$1
  as_postgres dropdb --if-exists "${db}_previous"
  if as_postgres psql --dbname=postgres --tuples-only --no-align \
      --command="SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1; then
    as_postgres psql --dbname=postgres --quiet --command="ALTER DATABASE \"$db\" RENAME TO \"${db}_previous\""
  fi
  as_postgres psql --dbname=postgres --quiet --command="ALTER DATABASE \"${db}_incoming\" RENAME TO \"$db\""
  as_postgres dropdb --if-exists "${db}_previous"
}
if [[ $(id -u) -ne 0 ]]; then
  echo "restore.sh: run it as root on the services host (it makes and swaps databases)" >&2
  exit 2
fi
drop_incoming() {
  as_postgres dropdb --if-exists "${MLFLOW_DB}_incoming" || true
  as_postgres dropdb --if-exists "${MLFLOW_AUTH_DB}_incoming" || true
}
if ! prepare_db "$MLFLOW_DB" "$MLFLOW_DB_USER" "$MLFLOW_DB_PASSWORD" tracking.dump ||
   ! prepare_db "$MLFLOW_AUTH_DB" "$MLFLOW_AUTH_DB_USER" "$MLFLOW_AUTH_DB_PASSWORD" auth.dump; then
  drop_incoming
  echo "restore.sh: a dump did not restore; the live databases are as they were" >&2
  exit 1
fi
swap_db "$MLFLOW_DB"
swap_db "$MLFLOW_AUTH_DB"

if [[ "$ARTIFACTS" == s3://* ]]; then
  WORK=$(mktemp -d)
  trap 'rm -rf "$WORK"' EXIT
  tar -C "$WORK" -xzf "$SRC/artifacts.tar.gz"
  env -u AWS_CA_BUNDLE rclone copy --quiet "$WORK/artifacts" ":s3,provider=Other,env_auth=true,no_check_bucket=true,endpoint='$S3_ENDPOINT_URL':${ARTIFACTS#s3://}"
else
  mkdir -p "$ARTIFACTS"
  tar -C "$ARTIFACTS" -xzf "$SRC/artifacts.tar.gz"
  if [[ -n "${ARTIFACTS_OWNER:-}" && $(id -u) -eq 0 ]]; then chown -R "$ARTIFACTS_OWNER" "$ARTIFACTS"; fi
fi
echo "restored $SRC"
