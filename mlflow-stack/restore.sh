#!/usr/bin/env bash
# Restore a backup made by backup.sh: both PostgreSQL databases and the artifacts.
# Stop the MLflow server first (supervisorctl stop mlflow / systemctl stop mlflow) and start it
# again afterwards. Missing databases are re-created (needs root on the PostgreSQL host).
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

restore_db() {  # restore_db DB USER PASSWORD FILE
  local db=$1 user=$2 password=$3 file=$4
  if ! PGPASSWORD=$password psql --no-password --host="$PGHOST" --port="$PGPORT" --username="$user" \
      --dbname="$db" --command='SELECT 1' >/dev/null 2>&1; then
    if [[ $(id -u) -ne 0 ]]; then
      echo "restore.sh: database $db is missing and only root can re-create it" >&2
      exit 1
    fi
    # As the postgres superuser over the local socket (peer auth), not over TCP.
    runuser -u postgres -- env -u PGHOST -u PGPASSWORD createdb --no-password --port="$PGPORT" \
      --owner="$user" --encoding=UTF8 --template=template0 "$db"
  fi
  PGPASSWORD=$password pg_restore --no-password --host="$PGHOST" --port="$PGPORT" --username="$user" \
    --dbname="$db" --clean --if-exists --no-owner --role="$user" --exit-on-error "$SRC/$file"
}
restore_db "$MLFLOW_DB" "$MLFLOW_DB_USER" "$MLFLOW_DB_PASSWORD" tracking.dump
restore_db "$MLFLOW_AUTH_DB" "$MLFLOW_AUTH_DB_USER" "$MLFLOW_AUTH_DB_PASSWORD" auth.dump

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
