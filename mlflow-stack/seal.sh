#!/usr/bin/env bash
# Check a backup folder where it was made and seal it: each dump must be readable by
# pg_restore, each archive must list, and SHA256SUMS records every file, so the copy that
# reaches the controller can be checked again before anything is deleted (stack/backups.py).
#
#   mlflow-stack/seal.sh BACKUP_DIR
set -euo pipefail
DIR=${1:?usage: seal.sh BACKUP_DIR}
cd "$DIR"
for dump in *.dump; do
  pg_restore --list "$dump" >/dev/null || { echo "seal.sh: $dump is not a readable dump" >&2; exit 1; }
done
for archive in *.tar.gz; do
  tar -tzf "$archive" >/dev/null || { echo "seal.sh: $archive does not list" >&2; exit 1; }
done
sha256sum -- *.dump *.tar.gz manifest.txt >SHA256SUMS
echo "sealed $DIR"
