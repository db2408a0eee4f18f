#!/usr/bin/env bash
# Builds SeaweedFS's `weed` (the release pinned in go.mod) from the Go module proxy into the
# machine's cache, only when it is not there yet: no registry ships the binary, and the first
# build takes long on 2 cores (Go's module and build caches make later ones quick).
#   bash tools/seaweedfs/build.sh        # prints the binary's path
# The stack installs it with SEAWEEDFS_DOWNLOAD_URL=<that path>.
set -euo pipefail
cd "$(dirname "$0")"

BIN="${WEED_BIN:-/var/cache/chameleon-mlops/bin/weed}"
if [ -x "$BIN" ] && "$BIN" version >/dev/null 2>&1; then
  echo "$BIN"
  exit 0
fi
if ! command -v go >/dev/null; then
  echo "build.sh: Go is not installed: install Go 1.26 (or set SEAWEEDFS_DOWNLOAD_URL to a weed binary)" >&2
  exit 1
fi
mkdir -p "$(dirname "$BIN")"
# Build to a temporary name first: a build that stops half-way leaves no binary behind.
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$BIN.tmp" github.com/seaweedfs/seaweedfs/weed
mv "$BIN.tmp" "$BIN"
"$BIN" version >&2
echo "$BIN"
