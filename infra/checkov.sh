#!/usr/bin/env bash
# checkov over the Chameleon Terraform, offline (--skip-download: no policy download, no
# platform). It lives in a venv of its own: it replaces python-hcl2's `hcl2` module with a fork.
# Skipped checks and why: infra/.checkov.yaml.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
checkov_version="3.3.30"
venv="$here/.venv-checkov"

if [[ ! -x "$venv/bin/checkov" ]] || [[ "$("$venv/bin/checkov" --version 2>/dev/null)" != "$checkov_version" ]]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q "checkov==$checkov_version"
fi

cd "$here"
exec "$venv/bin/checkov" --config-file .checkov.yaml --directory . "$@"
