"""The Chameleon Terraform (infra/), checked offline.

With terraform and the OpenStack provider built by infra/build-provider.sh (a filesystem mirror):
fmt, init (offline, -plugin-dir) and validate of every module, their `terraform test` files
(mock_provider: the real schema, no cloud), and the messages of refused variables. Without a
provider: structural tests on the parsed HCL (python-hcl2), which need neither.
Every Terraform command runs in a temporary copy, so the tree is left as it was.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import hcl2
import pytest

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
MODULES = {"root": "", "volume": "volume"}
PROVIDER_VERSION = (INFRA / "provider-version").read_text().strip()
MIRROR = Path(os.environ.get("TF_PLUGIN_CACHE", "/var/cache/chameleon-mlops/terraform-plugins"))
PROVIDER_BINARY = (
    MIRROR
    / "registry.terraform.io/terraform-provider-openstack/openstack"
    / PROVIDER_VERSION
    / "linux_amd64"
    / f"terraform-provider-openstack_v{PROVIDER_VERSION}"
)
TERRAFORM = shutil.which("terraform")

needs_terraform = pytest.mark.skipif(TERRAFORM is None, reason="terraform is not on PATH")
needs_provider = pytest.mark.skipif(
    TERRAFORM is None or not PROVIDER_BINARY.is_file(),
    reason=f"no OpenStack provider at {PROVIDER_BINARY}: run infra/build-provider.sh",
)


# ---------------------------------------------------------------- running terraform


def terraform(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "OS_"))}
    env["TF_IN_AUTOMATION"] = "1"
    env["CHECKPOINT_DISABLE"] = "1"  # no version check over the network
    command, *rest = args
    return subprocess.run(
        [TERRAFORM or "terraform", command, "-no-color", *rest],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def flat(text: str) -> str:
    """Terraform's diagnostics, without their box drawing and line wrapping."""
    return " ".join(text.replace("│", " ").split())


@pytest.fixture(scope="session")
def infra_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """infra/ copied to a temporary folder: Terraform writes its .terraform and lock file there."""
    copy = tmp_path_factory.mktemp("tf") / "infra"
    shutil.copytree(
        INFRA,
        copy,
        ignore=shutil.ignore_patterns(".venv*", ".terraform", ".terraform.lock.hcl", "*.tfstate*"),
    )
    return copy


def initialised(copy: Path, module: str) -> Path:
    """The module in the copy, initialised offline: providers only from the mirror."""
    where = copy / module
    if not (where / ".terraform").exists():
        result = terraform(where, "init", "-backend=false", "-input=false", f"-plugin-dir={MIRROR}")
        assert result.returncode == 0, result.stdout + result.stderr
    return where


EACH_MODULE = [
    pytest.param("", marks=needs_provider, id="root"),
    pytest.param("volume", marks=needs_provider, id="volume"),
]


@needs_terraform
def test_terraform_files_are_formatted() -> None:
    result = terraform(INFRA, "fmt", "-check", "-recursive", "-diff", ".")
    assert result.returncode == 0, f"run `terraform fmt -recursive infra`:\n{result.stdout}"


@pytest.mark.parametrize("module", EACH_MODULE)
def test_module_is_valid(infra_copy: Path, module: str) -> None:
    result = terraform(initialised(infra_copy, module), "validate")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "The configuration is valid" in result.stdout


@pytest.mark.parametrize("module", EACH_MODULE)
def test_module_tests_pass(infra_copy: Path, module: str) -> None:
    result = terraform(initialised(infra_copy, module), "test")
    assert result.returncode == 0, result.stdout + result.stderr
    summary = re.search(r"(\d+) passed, (\d+) failed", result.stdout)
    assert summary and int(summary[1]) > 0 and summary[2] == "0", result.stdout


GOOD_VARIABLES = {
    "stack_name": '"demo"',
    "cloud": '"chameleon-kvm-tacc"',
    "site": '"KVM@TACC"',
    "gpu_count": "1",
    "gpu_reservation_id": '"11111111-2222-3333-4444-555555555555"',
    "services_reservation_id": '"66666666-7777-8888-9999-000000000000"',
    "ssh_allowed_cidr": '"203.0.113.7/32"',
    "public_key": '"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGZha2VrZXlmb3J0ZXN0c29ubHk demo@stack"',
}


@needs_provider
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"site": '"KVM@UC"'}, 'site must be one of "CHI@TACC", "CHI@UC", "KVM@TACC".'),
        (
            {"ssh_allowed_cidr": '"0.0.0.0/0"'},
            "ssh_allowed_cidr opens SSH to the whole Internet: give your own address"
            ' (e.g. "203.0.113.7/32") or set allow_ssh_from_anywhere = true.',
        ),
        ({"gpu_count": "0"}, "gpu_count must be a whole number of GPU nodes, at least 1."),
        (
            {"site": '"CHI@UC"', "data_volume_id": '"aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"'},
            "data_volume_id is for KVM sites only",
        ),
    ],
    ids=["unknown-site", "ssh-from-anywhere", "zero-gpus", "volume-on-bare-metal"],
)
def test_refused_variable_says_what_to_fix(
    infra_copy: Path, tmp_path: Path, override: dict[str, str], message: str
) -> None:
    """What a user sees: the plan stops on the variable, with its message."""
    variables = "\n".join(f"  {k} = {v}" for k, v in (GOOD_VARIABLES | override).items())
    cases = infra_copy / f"refused-{tmp_path.name}"
    cases.mkdir()
    (cases / "refused.tftest.hcl").write_text(
        f'mock_provider "openstack" {{}}\n\nrun "refused" {{\n  command = plan\n'
        f"  variables {{\n{variables}\n  }}\n}}\n"
    )
    result = terraform(initialised(infra_copy, ""), "test", f"-test-directory={cases.name}")
    assert result.returncode != 0, result.stdout
    assert "Invalid value for variable" in flat(result.stdout + result.stderr)
    assert message in flat(result.stdout + result.stderr)


# ---------------------------------------------------------------- structure of the HCL


def unquote(value: Any) -> Any:
    """python-hcl2 8 keeps the quotes of labels and string literals; drop them and its extras."""
    if isinstance(value, dict):
        return {
            unquote(k): unquote(v)
            for k, v in value.items()
            if k not in ("__comments__", "__is_block__")
        }
    if isinstance(value, list):
        return [unquote(v) for v in value]
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def blocks(module: Path, kind: str) -> dict[tuple[str, str], dict[str, Any]]:
    """Every `resource` or `data` block of a module: (type, name) -> its body."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for tf in sorted(module.glob("*.tf")):
        with tf.open() as handle:
            parsed = unquote(hcl2.load(handle))
        for entry in parsed.get(kind, []):
            for type_, named in entry.items():
                for name, body in named.items():
                    found[(type_, name)] = body
    return found


def all_modules() -> list[Path]:
    return [INFRA / module for module in MODULES.values()]


def of_type(found: dict[tuple[str, str], dict[str, Any]], type_: str) -> dict[str, dict[str, Any]]:
    return {name: body for (t, name), body in found.items() if t == type_}


def test_no_rule_opens_anything_but_ssh_to_the_world() -> None:
    rules = of_type(blocks(INFRA, "resource"), "openstack_networking_secgroup_rule_v2")
    ingress = {name: rule for name, rule in rules.items() if rule["direction"] == "ingress"}
    assert ingress, "the KVM security group admits nothing: SSH would be blocked"
    for name, rule in ingress.items():
        if "remote_group_id" in rule:  # the stack's own ports
            assert rule["remote_group_id"] == "${openstack_networking_secgroup_v2.this[0].id}", name
            assert "remote_ip_prefix" not in rule, name
            continue
        # Anything else is open to an address range, possibly the world: SSH only.
        assert (rule.get("protocol"), rule.get("port_range_min"), rule.get("port_range_max")) == (
            "tcp",
            22,
            22,
        ), f"rule {name} opens more than SSH"
        assert "var.ssh_allowed_cidr" in rule["remote_ip_prefix"], name
    others = set(rules) - set(ingress)
    assert all(rules[name]["direction"] == "egress" for name in others)


def test_gpu_instances_use_the_reservation_never_the_lease() -> None:
    resources = blocks(INFRA, "resource")
    data = blocks(INFRA, "data")
    (instance,) = of_type(resources, "openstack_compute_instance_v2").values()
    assert (
        "data.openstack_compute_flavor_v2.reserved[each.value.reservation_id].id"
        in instance["flavor_id"]
    )
    assert data[("openstack_compute_flavor_v2", "reserved")]["name"] == "reservation:${each.key}"
    (hints,) = [d["scheduler_hints"] for d in instance["dynamic"] if "scheduler_hints" in d]
    assert hints["content"][0]["additional_properties"] == {
        "reservation": "${scheduler_hints.value}"
    }
    assert "each.value.reservation_id" in hints["for_each"]
    assert instance["lifecycle"][0]["replace_triggered_by"] == [
        "${terraform_data.reservation[each.key]}"
    ]
    text = "".join(tf.read_text() for tf in INFRA.glob("*.tf"))
    assert "var.gpu_reservation_id" in text and "var.services_reservation_id" in text
    assert not re.search(r"lease_id|var\.lease", text), "a lease id is not a reservation id"


def test_floating_ip_attaches_through_a_port_and_only_kvm_allocates_one() -> None:
    resources = blocks(INFRA, "resource")
    (association,) = of_type(resources, "openstack_networking_floatingip_associate_v2").values()
    assert association["port_id"] == "${openstack_networking_port_v2.this[local.gateway_name].id}"
    assert association["floating_ip"] == "${local.gateway_address}"
    # Bare metal's reserved IP is Blazar's (looked up); KVM's is allocated here, for KVM only.
    (allocated,) = of_type(resources, "openstack_networking_floatingip_v2").values()
    assert allocated["count"] == "${local.is_kvm ? 1 : 0}" and allocated["pool"] == "public"
    reserved = of_type(blocks(INFRA, "data"), "openstack_networking_floatingip_v2")["gateway"]
    assert reserved["count"] == "${!local.is_kvm && var.reservations_active ? 1 : 0}"
    for module in all_modules():
        for type_, _ in blocks(module, "resource"):
            assert type_ != "openstack_compute_floatingip_associate_v2", "removed in provider 3.0"


def test_data_volume_is_outside_the_root_state_and_on_the_services_host() -> None:
    root = blocks(INFRA, "resource")
    for type_ in [type_ for type_, _ in root]:
        assert type_ != "openstack_blockstorage_volume_v3", "make down would destroy the data"
    assert ("openstack_blockstorage_volume_v3", "this") in blocks(INFRA / "volume", "resource")
    attach = root[("openstack_compute_volume_attach_v2", "data")]
    assert attach["volume_id"] == "${var.data_volume_id}"
    assert attach["instance_id"] == "${openstack_compute_instance_v2.this[local.gateway_name].id}"
    with (INFRA / "main.tf").open() as handle:
        calls = unquote(hcl2.load(handle)).get("module", [])
    assert all(body["source"] != "./volume" for call in calls for body in call.values())


def test_no_private_key_reaches_the_state() -> None:
    for module in all_modules():
        for (type_, name), body in blocks(module, "resource").items():
            assert type_ != "tls_private_key", name
            if type_ == "openstack_compute_keypair_v2":
                # Without public_key the provider generates a key pair and stores its private half.
                assert body.get("public_key"), f"key pair {name} without a public key"


def test_provider_constraint_admits_the_built_release() -> None:
    for module in (INFRA, INFRA / "volume"):
        with (module / "versions.tf").open() as handle:
            (block,) = unquote(hcl2.load(handle))["terraform"]
        (providers,) = block["required_providers"]
        assert providers["openstack"]["source"] == "terraform-provider-openstack/openstack"
        assert providers["openstack"]["version"] == "~> 3.0"
    assert re.fullmatch(r"3\.\d+\.\d+", PROVIDER_VERSION)
