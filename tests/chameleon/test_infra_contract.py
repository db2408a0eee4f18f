"""The variables the stack CLI writes for infra/ are ones infra/ accepts: a `terraform test`
plan with `mock_provider "openstack"` (the real provider's schema, no cloud) on a copy of the
root module, for the KVM and the bare-metal layouts. Skips until infra/ and its provider
(infra/build-provider.sh) are there."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import UTC, datetime, timedelta

import pytest

from stack import access
from stack.chameleon import settings
from stack.chameleon import terraform as tf
from stack.chameleon.reservations import Lease
from stack.state import Stack
from tests.chameleon.conftest import REPO

INFRA = REPO / "infra"

TEST = """\
mock_provider "openstack" {{
  mock_resource "openstack_networking_port_v2" {{
    defaults = {{ all_fixed_ips = ["10.140.81.5"] }}
  }}
}}

variables {{
{variables}
}}

run "the_stack_clis_variables_are_accepted" {{
  command = plan
  assert {{
    condition     = output.layout == "{layout}"
    error_message = "The site picks the layout."
  }}
}}
"""


def _mirror() -> str:
    if not (INFRA / "main.tf").is_file() or not shutil.which("terraform"):
        pytest.skip("no infra/ root module or no terraform here")
    built = subprocess.run(
        ["bash", str(INFRA / "build-provider.sh")], capture_output=True, text=True, check=False
    )
    if built.returncode != 0:
        pytest.skip(f"no OpenStack provider: {built.stderr.strip()[-200:]}")
    return built.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize(("site", "layout"), [("KVM@TACC", "kvm"), ("CHI@UC", "baremetal")])
def test_infra_accepts_the_variables_the_cli_writes(tmp_path, monkeypatch, site, layout):
    mirror = _mirror()
    for key in ("GPU_FLAVOR", "NODE_TYPE", "GPU_NODES", "LEASE_HOURS", "ALLOW_SSH_FROM_ANYWHERE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("STACK_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("SITE", site)
    monkeypatch.setenv("SSH_ALLOWED_CIDR", "198.51.100.7/32")
    monkeypatch.setenv("GPU_NODES", "2")
    chosen = settings.for_up()
    stack = Stack("mystack", "chameleon")
    stack.create()
    now = datetime.now(UTC)
    lease = Lease(
        id="0f0e0d0c-0b0a-4090-8070-605040302010",
        name="mystack",
        status="ACTIVE",
        start=now,
        end=now + timedelta(hours=8),
        gpu_reservation_id="2b6f1c4e-8d3a-4f5e-9a7b-1c2d3e4f5a6b",
        services_reservation_id="3c7e2d5f-9e4b-4a6f-8b8c-2d3e4f5a6b7c",
        fip_reservation_id="4d8f3e6a-0f5c-4b7a-9c9d-3e4f5a6b7c8d",
        floating_ip="203.0.113.11",
    )
    volume = "5e9a4f7b-1a6d-4c8b-8d0e-4f5a6b7c8d9e"
    public_key = access.ensure_key(stack.folder)
    variables = tf.infra_variables(stack.name, chosen, "chi", lease, public_key, volume)

    module = tmp_path / "infra"
    shutil.copytree(INFRA, module, ignore=shutil.ignore_patterns(".terraform*", "*.tfstate*"))
    for old in (module / "tests").glob("*.tftest.hcl"):
        old.unlink()
    lines = "\n".join(f"  {name} = {json.dumps(value)}" for name, value in variables.items())
    (module / "tests" / "cli.tftest.hcl").write_text(TEST.format(variables=lines, layout=layout))
    init = subprocess.run(
        ["terraform", f"-chdir={module}", "init", "-input=false", f"-plugin-dir={mirror}"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert init.returncode == 0, init.stdout + init.stderr
    test = subprocess.run(
        ["terraform", f"-chdir={module}", "test", "-no-color"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert test.returncode == 0 and "1 passed, 0 failed" in test.stdout, test.stdout + test.stderr
