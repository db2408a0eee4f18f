"""`make up|down|status|extend CLOUD=chameleon` as a user runs them (`python -m stack ...`),
against the Chameleon API stand-in, with stand-in terraform, ssh and ansible-playbook on PATH
(the real ones need the cloud and its hosts)."""

from __future__ import annotations

import json
import stat
import subprocess
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import yaml

from core.state import StackRecord
from tests.chameleon.conftest import (
    SECRET,
    clouds_yaml,
    made_stack,
    one_error_line,
    stack_cli,
    training_cli,
    with_stubs,
)
from tests.chameleon.standin import now
from tests.conftest import service_rows

LEASES = r"/reservation/v1/leases"


# --- DRY_RUN --------------------------------------------------------------------------------
def test_dry_run_up_on_kvm_prints_the_plan_and_contacts_nothing(standin, home, tmp_path):
    path = clouds_yaml(tmp_path / "clouds.yaml", standin.url)
    state = tmp_path / "state"
    proc = stack_cli(home, state, "up", DRY_RUN="1", OS_CLIENT_CONFIG_FILE=str(path),
                     SSH_ALLOWED_CIDR="198.51.100.7/32", GPU_NODES="2")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "lease request to Blazar at KVM@TACC (kvm)" in out
    assert '"resource_type": "flavor:instance", "flavor": "g1.h100.pci.1", "amount": 2' in out
    assert '"flavor": "m1.xlarge", "amount": 1' in out
    assert "virtual:floatingip" not in out  # KVM: allocated from public, not reserved
    assert "gateway floating IP: allocated from 'public' by Terraform" in out
    assert "3 node(s) x 8 h = 24 node-hours" in out
    assert "the SU rate of g1.h100.pci.1, m1.xlarge is not in Chameleon's documentation" in out
    assert "when free: python-chi cannot tell when a KVM flavor is next free" in out
    assert '"ssh_allowed_cidr": "198.51.100.7/32"' in out
    assert '"gpu_reservation_id": "<from the lease>"' in out
    assert "security group: SSH from 198.51.100.7/32" in out
    assert "terraform -chdir=" in out and " apply -input=false -auto-approve" in out
    assert "/volume apply" in out  # the data volume's own state first
    assert "ansible-playbook -i" in out
    assert SECRET not in out + proc.stderr
    assert standin.requests == [] and not state.exists()


def test_dry_run_up_on_bare_metal_says_when_the_nodes_are_next_free(standin, home, tmp_path):
    path = clouds_yaml(tmp_path / "clouds.yaml", standin.url, region="CHI@UC")
    standin.region = "CHI@UC"
    # Two gpu_a100_pcie nodes: one taken for the next 10 h, the other from 9 h to 20 h ahead.
    soon = now().replace(second=0, microsecond=0)
    for start, end in ((-1, 10), (9, 20)):
        span = (soon + timedelta(hours=start), soon + timedelta(hours=end))
        standin.add_host("gpu_a100_pcie", booked=[span])
    state = tmp_path / "state"
    proc = stack_cli(home, state, "up", DRY_RUN="1", OS_CLIENT_CONFIG_FILE=str(path),
                     SITE="CHI@UC", SSH_ALLOWED_CIDR="198.51.100.0/24")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "lease request to Blazar at CHI@UC (baremetal)" in out
    assert '"resource_type": "physical:host"' in out
    assert '\\"$node_type\\", \\"gpu_a100_pcie\\"' in out
    assert "compute_cascadelake_r" in out
    assert "the reservation's scheduler hint" in out
    assert "no security groups on bare metal" in out
    assert '"data_volume_id": ""' in out and "/volume apply" not in out
    assert '"resource_type": "virtual:floatingip", "network": "public", "amount": 1' in out
    # One node is free for the default 8 h from now on: the lease could start now.
    assert "1 of 2 gpu_a100_pcie node(s) are free then for 8 h" in out, out
    assert "compute_cascadelake_r 1 SU/h" in out
    assert "the SU rate of gpu_a100_pcie is not in Chameleon's documentation" in out
    # Blazar was only read (when the hardware is free); nothing was made or written.
    assert {method for method, _ in standin.requests} <= {"GET", "POST"}
    assert standin.count("POST", LEASES) == 0 and not standin.leases and not state.exists()

    two = stack_cli(home, state, "up", DRY_RUN="1", OS_CLIENT_CONFIG_FILE=str(path),
                    SITE="CHI@UC", SSH_ALLOWED_CIDR="198.51.100.0/24", GPU_NODES="2")  # fmt: skip
    slot = (soon + timedelta(hours=20)).strftime("%Y-%m-%d %H:%M")
    assert (
        f"are next free for 8 h from {slot} UTC; take that slot with START='{slot}'" in two.stdout
    )


# --- one clear line for every missing setting ---------------------------------------------
def _error_cases(url: str, tmp_path) -> list[tuple[dict, str]]:
    good = clouds_yaml(tmp_path / "good.yaml", url)
    no_secret = clouds_yaml(tmp_path / "nosecret.yaml", url, application_credential_secret=None)
    password = tmp_path / "password.yaml"
    entry = yaml.safe_load(good.read_text())
    entry["clouds"]["chi-kvm@tacc"]["auth_type"] = "password"
    password.write_text(yaml.safe_dump(entry))
    ok = {"OS_CLIENT_CONFIG_FILE": str(good), "SSH_ALLOWED_CIDR": "198.51.100.7/32"}
    return [
        ({"SSH_ALLOWED_CIDR": "198.51.100.7/32"}, "no clouds.yaml: put it in ./clouds.yaml"),
        ({**ok, "OS_CLIENT_CONFIG_FILE": str(tmp_path / "nope.yaml")},
         "OS_CLIENT_CONFIG_FILE=" ),
        ({**ok, "OS_CLOUD": "chi-uc"}, "has no entry 'chi-uc' (OS_CLOUD); entries: chi-kvm@tacc"),
        ({**ok, "OS_CLIENT_CONFIG_FILE": str(no_secret)},
         "has no application_credential_secret; create an application credential"),
        ({**ok, "OS_CLIENT_CONFIG_FILE": str(password)}, "uses auth_type password"),
        ({**ok, "SITE": "CHI@Mars"}, "SITE=CHI@Mars is not a Chameleon site"),
        ({**ok, "GPU_FLAVOR": "g9.huge"}, "GPU_FLAVOR=g9.huge is not a GPU flavor of KVM@TACC"),
        ({**ok, "NODE_TYPE": "gpu_a100_pcie"}, "NODE_TYPE does not apply on KVM@TACC"),
        ({**ok, "SITE": "CHI@UC", "NODE_TYPE": "gpu_h200"},
         "NODE_TYPE=gpu_h200 is not a GPU node type of CHI@UC"),
        ({**ok, "SITE": "CHI@UC"}, "is for KVM@TACC, but SITE=CHI@UC"),
        ({**ok, "SSH_ALLOWED_CIDR": ""}, "set SSH_ALLOWED_CIDR=<your public address>/32"),
        ({**ok, "SSH_ALLOWED_CIDR": "0.0.0.0/0"}, "ALLOW_SSH_FROM_ANYWHERE=1"),
        ({**ok, "SSH_ALLOWED_CIDR": "my-laptop"}, "SSH_ALLOWED_CIDR=my-laptop is not an IPv4 CIDR"),
        ({**ok, "SSH_ALLOWED_CIDR": "2001:db8::/64"}, "is not an IPv4 CIDR"),
        ({**ok, "GPU_NODES": "0"}, "GPU_NODES=0 is not a number of GPU nodes"),
        ({**ok, "LEASE_HOURS": "500"}, "LEASE_HOURS=500 is not a lease length at KVM@TACC"),
    ]  # fmt: skip


def test_every_missing_setting_is_one_line(standin, home, tmp_path):
    for settings, expected in _error_cases(standin.url, tmp_path):
        state = tmp_path / "state"
        for dry_run in ("1", ""):
            proc = stack_cli(home, state, "up", DRY_RUN=dry_run, **settings)
            line = one_error_line(proc)
            assert expected in line, (settings, line)
            assert SECRET not in proc.stdout + proc.stderr
            assert not state.exists(), settings
    assert standin.requests == []


# --- up, interrupted and continued; status; extend; down -----------------------------------
def terraform_calls(stubs) -> list[dict]:
    log = stubs["terraform_log"]
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_up_interrupted_after_the_lease_continues_with_the_same_lease(
    standin, home, tmp_path, stubs
):
    path = clouds_yaml(tmp_path / "clouds.yaml", standin.url)
    state = tmp_path / "state"
    settings = with_stubs(stubs, OS_CLIENT_CONFIG_FILE=str(path), GPU_NODES="2",
                          STUB_KILL_ON_APPLY=str(stubs["kill_marker"]))  # fmt: skip

    first = stack_cli(home, state, "up", **settings)
    assert first.returncode == -9, first.stdout + first.stderr  # killed right after the lease
    assert standin.count("POST", LEASES) == 1
    record = StackRecord.read(state / "chameleon")
    assert record.lease.id in standin.leases
    assert "lease" in record.steps

    second = stack_cli(home, state, "up", **settings)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "reused" in second.stdout and "is up at KVM@TACC" in second.stdout
    assert standin.count("POST", LEASES) == 1  # never a second lease
    (lease,) = standin.leases.values()
    record = StackRecord.read(state / "chameleon")
    assert record.state == "up"
    assert set(record.steps) == {"lease", "volume", "infra", "ssh", "configure", "health"}

    folder = state / "chameleon"
    tfvars_file = folder / "terraform" / "infra" / "terraform.tfvars.json"
    assert stat.S_IMODE(tfvars_file.stat().st_mode) == 0o600
    tfvars = json.loads(tfvars_file.read_text())
    by_id = {r["id"]: r for r in lease["reservations"]}
    assert by_id[tfvars["gpu_reservation_id"]]["amount"] == 2
    assert by_id[tfvars["services_reservation_id"]]["amount"] == 1
    # KVM: the gateway's floating IP is allocated by Terraform from public, not reserved.
    (allocated,) = standin.floating_ips
    assert allocated["tags"] == ["stack=chameleon"] and tfvars["floating_ip_address"] == ""
    fip = allocated["floating_ip_address"]
    (volume,) = standin.objects["volume"]
    assert tfvars["data_volume_id"] == volume["id"] and volume["name"] == "chameleon-data"
    assert tfvars["public_key"].startswith("ssh-ed25519 ")
    assert stat.S_IMODE((folder / "secrets" / "ssh_key").stat().st_mode) == 0o600

    calls = terraform_calls(stubs)
    for call in calls:  # Terraform reads clouds.yaml itself; no credential in its env
        assert call["env"].get("OS_CLIENT_CONFIG_FILE") == str(path)
        assert not {k for k in call["env"] if k.startswith("OS_")} - {"OS_CLIENT_CONFIG_FILE"}
    for written in folder.rglob("*"):
        if written.is_file():
            assert SECRET not in written.read_text(errors="replace"), written

    inventory = yaml.safe_load((folder / "inventory.yml").read_text())
    groups = inventory["all"]["children"]
    (gateway,) = groups["services"]["hosts"].values()
    assert gateway["ansible_host"] == fip and gateway["stack_private_address"] == "10.52.0.10"
    assert list(groups["ray_head"]["hosts"]) == list(groups["services"]["hosts"])
    workers = groups["ray_workers"]["hosts"]
    assert [w["ansible_host"] for w in workers.values()] == ["10.52.0.20", "10.52.0.21"]
    for worker in workers.values():
        args = worker["ansible_ssh_common_args"]
        assert f"cc@{fip}" in args and "StrictHostKeyChecking=yes" in args
        assert f"UserKnownHostsFile={folder / 'known_hosts'}" in args
    assert inventory["all"]["vars"]["ansible_ssh_private_key_file"] == str(
        folder / "secrets" / "ssh_key"
    )
    # First contact pins host keys (accept-new), the gateway first.
    ssh_calls = stubs["ssh_log"].read_text().splitlines()
    assert ssh_calls[0].endswith(f"cc@{fip} true") and "accept-new" in ssh_calls[0]
    assert stubs["ansible_log"].read_text().count("site.yml") == 1

    status = stack_cli(home, state, "status", **settings)
    assert status.returncode == 0, status.stderr
    assert "ACTIVE, ends" in status.stdout and "h left" in status.stdout
    assert "warning" not in status.stdout
    assert "MLflow http://127.0.0.1:5000" in status.stdout

    ends = StackRecord.read(folder).lease.end
    standin.flavor_updates = "allow"  # the later flavor plugin (blazar@0280aeb0) moves dates
    extend = stack_cli(home, state, "extend", **settings, HOURS="4")
    assert extend.returncode == 0, extend.stderr
    assert "extended by 4 h" in extend.stdout
    extended = StackRecord.read(folder).lease.end
    hours = (datetime.fromisoformat(extended) - datetime.fromisoformat(ends)).total_seconds() / 3600
    assert 3.98 < hours <= 4  # the record follows the lease (Blazar's minutes)

    standin.refuse_update = "Not enough resources available with query {'flavor': 'g1.h100'}"
    refused = stack_cli(home, state, "extend", **settings, HOURS="4")
    assert "Blazar refused to extend lease 'chameleon' by 4 h: Not enough" in one_error_line(
        refused
    )
    assert standin.leases[lease["id"]]["status"] == "ACTIVE"  # a non-fatal refusal

    # The flavor plugin of blazar@5204b41a refuses any update and leaves the lease in ERROR,
    # its instances running until its end: one line says what to do instead, and the stack
    # still counts the lease as its own (status, a repairing `make up`).
    standin.refuse_update, standin.flavor_updates = None, "refuse"
    line = one_error_line(stack_cli(home, state, "extend", **settings, HOURS="4"))
    assert "does not prolong flavor reservations" in line and "`make train RESUME=1`" in line
    assert standin.leases[lease["id"]]["status"] == "ERROR"
    status = stack_cli(home, state, "status", **settings)
    assert "Blazar lists the lease as ERROR since it refused to prolong it" in status.stdout
    again = stack_cli(home, state, "up", **settings)
    assert again.returncode == 0 and "reused" in again.stdout, again.stdout + again.stderr

    dry = stack_cli(home, state, "down", **settings, DRY_RUN="1")
    assert dry.returncode == 0, dry.stderr
    assert f"delete lease {lease['id']} at KVM@TACC" in dry.stdout
    assert "keep the data volume chameleon-data" in dry.stdout
    assert lease["id"] in standin.leases

    down = stack_cli(home, state, "down", **settings)
    assert down.returncode == 0, down.stdout + down.stderr
    assert f"lease 'chameleon' ({lease['id']}) deleted" in down.stdout
    assert "backed up to" in down.stdout  # the tracking data, before the compute went
    assert "backup.yml" in stubs["ansible_log"].read_text()
    assert "nothing else is left at KVM@TACC" in down.stdout
    assert not standin.leases
    actions = [next(a for a in c["args"] if not a.startswith("-")) for c in terraform_calls(stubs)]
    assert actions.count("destroy") == 1  # infra only: the volume is kept


def test_up_checks_the_services_through_a_tunnel_and_names_a_failing_one(
    standin, home, tmp_path, stubs
):
    path = clouds_yaml(tmp_path / "clouds.yaml", standin.url)
    state = tmp_path / "state"
    settings = with_stubs(stubs, OS_CLIENT_CONFIG_FILE=str(path), HEALTH_TIMEOUT="3")
    failing = stack_cli(home, state, "up", STUB_FAILING="mlflow", **settings)
    line = one_error_line(failing)
    assert "MLflow is not healthy: /health answered 503" in line, line
    record = StackRecord.read(state / "chameleon")
    assert record.state != "up" and "health" not in record.steps
    # The check's tunnel forwards free local ports to the services host, and was closed.
    (probe,) = [c for c in stubs["ssh_log"].read_text().splitlines() if " -N " in f" {c} "]
    assert ":10.52.0.10:5000 " in probe and ":10.52.0.10:8265 " in probe, probe
    assert "-L 127.0.0.1:5000:" not in probe
    assert not subprocess.run(["pgrep", "-f", probe], capture_output=True).stdout

    healthy = stack_cli(home, state, "up", **settings)  # the repair continues
    assert healthy.returncode == 0, healthy.stderr
    rows = service_rows(healthy.stdout)
    for service in ("MLflow", "Ray", "SeaweedFS"):
        health, address = rows[service][:2]
        assert health == "ok" and address.startswith("http://127.0.0.1:"), rows
    assert "http://127.0.0.1:5000" in healthy.stdout  # shown as `make tunnel` gives it
    assert len(standin.leases) == 1


def test_status_warns_when_the_lease_ends_soon(standin, home, tmp_path, stubs):
    state, settings = made_stack(standin, home, tmp_path, stubs, LEASE_HOURS="1")
    status = stack_cli(home, state, "status", **settings)
    assert "warning: under 2 h left" in status.stdout
    assert "`make extend HOURS=24` prolongs it" in status.stdout


def test_tunnel_forwards_the_services_through_the_pinned_gateway(standin, home, tmp_path, stubs):
    state, settings = made_stack(standin, home, tmp_path, stubs)
    fip = standin.floating_ips[0]["floating_ip_address"]

    tunnel = stack_cli(home, state, "tunnel", **settings)
    assert tunnel.returncode == 0, tunnel.stderr
    for line in ("http://127.0.0.1:5000", "http://127.0.0.1:8265", "http://127.0.0.1:8333"):
        assert line in tunnel.stdout
    call = stubs["ssh_log"].read_text().splitlines()[-1]
    for port in (5000, 8265, 8333):
        assert f"-L 127.0.0.1:{port}:10.52.0.10:{port}" in call
    assert "StrictHostKeyChecking=yes" in call and call.endswith(f"cc@{fip}")


def test_train_reaches_the_stack_through_the_tunnel_and_learns_the_lease(
    standin, home, tmp_path, stubs
):
    state, settings = made_stack(standin, home, tmp_path, stubs)
    endpoints = json.loads((state / "chameleon" / "endpoints.json").read_text())
    # This machine reaches the services at the tunnels' local ends; the private URLs are kept.
    assert endpoints["ray_address"] == "http://127.0.0.1:8265"
    assert endpoints["mlflow_tracking_uri"] == "http://127.0.0.1:5000"
    assert endpoints["s3_endpoint"] == "http://127.0.0.1:8333"
    assert endpoints["private"]["ray_address"] == "http://10.52.0.10:8265"
    assert stat.S_IMODE((state / "chameleon" / "endpoints.json").stat().st_mode) == 0o600

    dry = training_cli(home, state, "train", TASK="classify", DRY_RUN="1")
    assert dry.returncode == 0, dry.stderr
    assert "Ray Jobs API at http://127.0.0.1:8265" in dry.stdout, dry.stdout
    (carried,) = [line for line in dry.stdout.splitlines() if "environment" in line]
    for name in ("STACK_CLOUD", "STACK_LEASE_END", "STACK_HARDWARE"):
        assert name in carried, carried

    # No `make tunnel` open: the command opens forwards of its own through the pinned gateway
    # to the services' private addresses, and the job goes through them.
    ran = training_cli(home, state, "train", TASK="classify", **settings)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "stand-in job ran" in ran.stdout
    (job,) = [json.loads(line) for line in Path(settings["STUB_JOBS_LOG"]).read_text().splitlines()]
    assert job["entrypoint"].startswith("python -m training train task=classify"), job
    assert job["runtime_env"]["working_dir"].startswith("gcs://_ray_pkg_"), job  # uploaded
    assert job["runtime_env"]["env_vars"]["STACK_CLOUD"] == "chameleon"
    token = (state / "chameleon" / "secrets" / "ray_auth_token").read_text().strip()
    assert job["authorization"] == f"Bearer {token}"
    (call,) = [c for c in stubs["ssh_log"].read_text().splitlines() if "10.52.0.10:8265" in c
               and "-L 127.0.0.1:8265:" not in c][-1:]  # fmt: skip
    fip = standin.floating_ips[0]["floating_ip_address"]
    assert "StrictHostKeyChecking=yes" in call and call.endswith(f"cc@{fip}"), call

    # The gateway does not answer: one line, no traceback.
    down = training_cli(home, state, "train", TASK="classify", **settings, STUB_SSH_DOWN="1")
    line = one_error_line(down)
    assert "the SSH tunnel for make train ended (exit 1: ssh: connect to host" in line, line
    assert "`make status` shows the stack" in line, line


def test_commands_without_cloud_are_about_the_stack_the_last_up_was_for(
    standin, home, tmp_path, stubs
):
    state, settings = made_stack(standin, home, tmp_path, stubs)
    assert (state / "current").read_text().strip() == "chameleon"
    unset = {**settings, "CLOUD": ""}
    status = stack_cli(home, state, "status", **unset)
    assert status.returncode == 0, status.stderr
    assert "stack chameleon (CLOUD=chameleon, KVM@TACC): up" in status.stdout, status.stdout
    dry = training_cli(home, state, "train", TASK="classify", DRY_RUN="1", CLOUD="")
    assert dry.returncode == 0, dry.stderr
    assert "Ray Jobs API at http://127.0.0.1:8265" in dry.stdout, dry.stdout
    # Naming the stack with another cloud is a mistake, said in one line.
    wrong = stack_cli(
        home, state, "status", **{**unset, "CLOUD": "local", "STACK_NAME": "chameleon"}
    )
    line = one_error_line(wrong)
    assert "stack 'chameleon' is a CLOUD=chameleon stack; drop CLOUD=" in line, line


def test_down_lists_what_is_left_with_the_command_to_remove_it(standin, home, tmp_path, stubs):
    state, settings = made_stack(standin, home, tmp_path, stubs)
    # Something Terraform did not remove (made by hand, or a destroy that half failed).
    standin.servers.append({"id": "9f1d2c3b-0000-4000-8000-000000000001",
                            "name": "chameleon-gpu-1", "status": "ERROR"})  # fmt: skip
    standin.servers.append({"id": "9f1d2c3b-0000-4000-8000-000000000002",
                            "name": "chameleonic", "status": "ACTIVE"})  # fmt: skip

    down = stack_cli(home, state, "down", **settings, PURGE="1", CONFIRM="chameleon")
    assert down.returncode == 0, down.stdout + down.stderr
    assert "still at KVM@TACC under the name chameleon" in down.stdout
    assert ("server chameleon-gpu-1 (9f1d2c3b-0000-4000-8000-000000000001): openstack "
            "--os-cloud chi-kvm@tacc server delete 9f1d2c3b-0000-4000-8000-000000000001"
            ) in down.stdout  # fmt: skip
    assert "chameleonic" not in down.stdout  # another stack's name that merely starts alike
    actions = [next(a for a in c["args"] if not a.startswith("-")) for c in terraform_calls(stubs)]
    assert actions.count("destroy") == 2  # PURGE=1: the volume's state too


@pytest.mark.parametrize(
    ("command", "clouds"),
    [("extend", "CLOUD=chameleon"), ("tunnel", "CLOUD=chameleon and CLOUD=sim")],
)
def test_extend_and_tunnel_are_not_for_local_stacks(home, tmp_path, command, clouds):
    proc = stack_cli(home, tmp_path / "state", command, CLOUD="local")
    assert f"make {command} is for {clouds} stacks" in one_error_line(proc)
