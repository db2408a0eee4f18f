#!/usr/bin/env bash
# Builds terraform-provider-openstack from the Go module proxy (no prebuilt provider can be
# downloaded here) and places it in a filesystem mirror that `terraform init -plugin-dir=` reads
# offline. Idempotent: does nothing when the binary is already there. Prints the mirror's path.
#
# The pinned release lives only in infra/provider-version; versions.tf allows `~> 3.0`.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
version="$(tr -d '[:space:]' < "$here/provider-version")"
mirror="${TF_PLUGIN_CACHE:-/var/cache/chameleon-mlops/terraform-plugins}"
platform="linux_amd64"
target_dir="$mirror/registry.terraform.io/terraform-provider-openstack/openstack/$version/$platform"
binary="$target_dir/terraform-provider-openstack_v$version"

if [[ ! -x "$binary" ]]; then
  command -v go >/dev/null || { echo "build-provider: 'go' is not on PATH; install Go >= 1.24" >&2; exit 1; }
  gobin="$(mktemp -d)"
  trap 'rm -rf "$gobin"' EXIT
  echo "build-provider: building terraform-provider-openstack v$version (minutes on 2 cores)" >&2
  GOBIN="$gobin" go install \
    "github.com/terraform-provider-openstack/terraform-provider-openstack/v3@v$version"
  mkdir -p "$target_dir"
  # Move into place atomically so an interrupted build never leaves a half-written provider.
  install -m 0755 "$gobin/terraform-provider-openstack" "$binary.partial"
  mv "$binary.partial" "$binary"
fi
echo "$mirror"
