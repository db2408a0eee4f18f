"""Every stack setting reaches the Ansible inventory on every target that honours it, and is
refused in one line on a target that cannot: one inventory builder, one settings table
(stack/settings.py), rendered here as `make up DRY_RUN=1` renders it, without making hosts."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml
from rich.console import Console

from core.errors import UserError
from stack import inventory, settings
from stack.state import Stack
from stack.targets import target_for
from tests.chameleon.conftest import KNOBS, clouds_yaml
from tests.conftest import REPO

# A value for each setting that becomes an inventory variable, and what it becomes.
VALUES = {
    "OBJECT_STORE": ("external", "external"),
    "S3_ENDPOINT": ("http://198.51.100.20:9000", "http://198.51.100.20:9000"),
    "S3_ACCESS_KEY_FILE": ("/keys/access", "/keys/access"),
    "S3_SECRET_KEY_FILE": ("/keys/secret", "/keys/secret"),
    "SEAWEEDFS_DOWNLOAD_URL": ("/opt/bin/weed", "/opt/bin/weed"),
    "SSH_ALLOWED_CIDR": ("10.99.0.0/16", ["10.99.0.0/16"]),
}
INVENTORY_SETTINGS = [s for s in settings.SETTINGS if s.variable]


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for key in list(os.environ):
        if key.startswith("OS_") or key in KNOBS or key in settings.BY_NAME:
            monkeypatch.delenv(key)
    monkeypatch.setenv("STACK_DIR", str(tmp_path / "state"))
    return monkeypatch


def rendered(cloud: str, monkeypatch, tmp_path) -> dict:
    """The inventory `make up DRY_RUN=1` shows for `cloud`, hosts planned but not made."""
    if cloud == "chameleon":
        path = clouds_yaml(tmp_path / "clouds.yaml", "http://127.0.0.1:9")
        monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(path))
        monkeypatch.setenv("SSH_ALLOWED_CIDR", os.environ.get("SSH_ALLOWED_CIDR", "10.99.0.0/16"))
    target = target_for(Stack(f"{cloud}-settings", cloud), Console(quiet=True))
    if cloud == "chameleon":
        target.preflight("up")  # reads its settings (root, ports and sshd are not the point)
    return inventory.render(target.stack, target.planned_hosts())


def test_every_inventory_setting_has_a_value_here():
    assert {s.name for s in INVENTORY_SETTINGS} == set(VALUES)


@pytest.mark.parametrize("cloud", ["local", "sim", "chameleon"])
@pytest.mark.parametrize("setting", INVENTORY_SETTINGS, ids=lambda s: s.name)
def test_each_setting_reaches_the_inventory_or_is_refused(clean_env, tmp_path, cloud, setting):
    given, expected = VALUES[setting.name]
    clean_env.setenv(setting.name, given)
    if cloud not in setting.targets:
        with pytest.raises(UserError, match=f"{setting.name} does not apply to CLOUD={cloud}"):
            rendered(cloud, clean_env, tmp_path)
        return
    variables = rendered(cloud, clean_env, tmp_path)["all"]["vars"]
    assert variables[setting.variable] == expected


@pytest.mark.parametrize("cloud", ["local", "sim"])
@pytest.mark.parametrize("name", ["SITE", "GPU_NODES", "LEASE_HOURS", "START"])
def test_a_chameleon_setting_elsewhere_is_one_line(clean_env, tmp_path, cloud, name):
    clean_env.setenv(name, "1")
    with pytest.raises(UserError, match=f"{name} does not apply to CLOUD={cloud}"):
        rendered(cloud, clean_env, tmp_path)


def test_an_endpoint_without_object_store_means_external(clean_env, tmp_path):
    clean_env.setenv("S3_ENDPOINT", "http://198.51.100.20:9000")
    variables = rendered("chameleon", clean_env, tmp_path)["all"]["vars"]
    assert variables["stack_object_store"] == "external"


def test_dry_run_on_chameleon_shows_the_external_endpoint_in_the_inventory(clean_env, tmp_path):
    path = clouds_yaml(tmp_path / "clouds.yaml", "http://127.0.0.1:9")
    env = {k: v for k, v in os.environ.items() if k != "CLOUD"}
    env.update(
        CLOUD="chameleon",
        OS_CLIENT_CONFIG_FILE=str(path),
        SSH_ALLOWED_CIDR="198.51.100.7/32",
        OBJECT_STORE="external",
        S3_ENDPOINT="http://198.51.100.20:9000",
        DRY_RUN="1",
        HOME=str(tmp_path),
    )
    proc = subprocess.run(
        [sys.executable, "-m", "stack", "up"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    shown = proc.stdout.split("inventory (written 0600 to", 1)[1].split("\n", 1)[1]
    shown = shown.split("\nthen: ", 1)[0]
    variables = yaml.safe_load(shown)["all"]["vars"]
    assert variables["stack_object_store"] == "external"
    assert variables["stack_s3_endpoint_url"] == "http://198.51.100.20:9000"
    assert variables["stack_ssh_allowed_cidrs"] == ["198.51.100.7/32"]
    assert not (tmp_path / "state").exists()  # a dry run writes nothing
