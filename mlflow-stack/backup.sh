#!/usr/bin/env bash
# Back up the MLflow tracking stack: both PostgreSQL databases (tracking store and auth store)
# and the artifacts (a local directory or an s3:// prefix, copied with rclone) into a dated folder.
#
#   mlflow-stack/backup.sh [--env FILE] [DEST_ROOT]
#
# FILE defaults to /etc/mlflow/backup.env (written by the ansible mlflow role, 0600 root).
# DEST_ROOT defaults to /var/backups/mlflow. Prints the backup folder on the last line.
set -euo pipefail

ENV_FILE=/etc/mlflow/backup.env
if [[ "${1:-}" == "--env" ]]; then ENV_FILE=$2; shift 2; fi
DEST_ROOT=${1:-/var/backups/mlflow}

if [[ ! -r "$ENV_FILE" ]]; then
  echo "backup.sh: cannot read $ENV_FILE (run as root on the services host, or pass --env FILE)" >&2
  exit 2
fi
set -a
# shellcheck disable=SC1090
. "$ENV_FILE"
set +a

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
DEST="$DEST_ROOT/mlflow-backup-$STAMP"
umask 077
mkdir -p "$DEST"

dump() {  # dump DB USER PASSWORD FILE
  PGPASSWORD=$3 pg_dump --no-password --host="$PGHOST" --port="$PGPORT" --username="$2" \
    --format=custom --no-owner --file="$DEST/$4" "$1"
}
dump "$MLFLOW_DB" "$MLFLOW_DB_USER" "$MLFLOW_DB_PASSWORD" tracking.dump
dump "$MLFLOW_AUTH_DB" "$MLFLOW_AUTH_DB_USER" "$MLFLOW_AUTH_DB_PASSWORD" auth.dump

if [[ "$ARTIFACTS" == s3://* ]]; then
  # rclone's on-the-fly S3 remote; env_auth: the keys come from AWS_* (backup.env), never argv.
  # rclone 1.60 (Debian 12) fails on an AWS_CA_BUNDLE in the environment: not needed here.
  remote=":s3,provider=Other,env_auth=true,no_check_bucket=true,endpoint='$S3_ENDPOINT_URL':${ARTIFACTS#s3://}"
  mkdir -p "$DEST/artifacts"  # rclone makes no folder for an empty bucket
  env -u AWS_CA_BUNDLE rclone copy --quiet "$remote" "$DEST/artifacts"
  # Every object arrived whole (sizes, and hashes where the store gives them).
  env -u AWS_CA_BUNDLE rclone check --quiet --one-way "$remote" "$DEST/artifacts"
  objects=$(find "$DEST/artifacts" -type f | wc -l)
  tar -C "$DEST" -czf "$DEST/artifacts.tar.gz" artifacts && rm -rf "$DEST/artifacts"
else
  objects=$(find "$ARTIFACTS" -type f | wc -l)
  tar -C "$ARTIFACTS" -czf "$DEST/artifacts.tar.gz" .
fi

# objects.<archive>: how many files the archive holds, which `make backup` checks again.
cat >"$DEST/manifest.txt" <<MANIFEST
created_utc=$STAMP
tracking_db=$MLFLOW_DB
auth_db=$MLFLOW_AUTH_DB
artifacts=$ARTIFACTS
objects.artifacts.tar.gz=$objects
MANIFEST
echo "backup written to:"
echo "$DEST"
