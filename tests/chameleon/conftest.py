"""Fixtures for the Chameleon target: the API stand-in on loopback, a clouds.yaml pointing at
it, and stand-in `terraform`, `ssh` and `ansible-playbook` binaries (the real ones need the
cloud and its hosts) for the CLI tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.chameleon.standin import Chameleon
from tests.conftest import SCRUBBED

REPO = Path(__file__).resolve().parents[2]
CREDENTIAL_ID = "0d1c5b7e9a2f4c6e8b0a1d3f5e7c9b2a"
SECRET = "standin-secret-Zq81vXk0"  # must never show up in output, files or child envs
KNOBS = (
    "CLOUD", "STACK_NAME", "SITE", "GPU_FLAVOR", "NODE_TYPE", "GPU_NODES", "LEASE_HOURS",
    "SSH_ALLOWED_CIDR", "ALLOW_SSH_FROM_ANYWHERE", "HOURS", "DRY_RUN", "PURGE", "CONFIRM",
    "LEASE_TIMEOUT", "SSH_TIMEOUT", "HEALTH_TIMEOUT", "TERRAFORM", "ANSIBLE_VENV", "STACK_DIR",
)  # fmt: skip


def clouds_yaml(path: Path, url: str, region: str = "KVM@TACC", **auth_changes) -> Path:
    auth = {
        "auth_url": f"{url}/identity",  # the dashboard's file may leave /v3 off
        "application_credential_id": CREDENTIAL_ID,
        "application_credential_secret": SECRET,
        **auth_changes,
    }
    entry = {
        "auth": {k: v for k, v in auth.items() if v is not None},
        "region_name": region,
        "interface": "public",
        "identity_api_version": 3,
        "auth_type": "v3applicationcredential",
    }
    path.write_text(yaml.safe_dump({"clouds": {f"chi-{region.lower()}": entry}}))
    return path


@pytest.fixture
def standin():
    with Chameleon(CREDENTIAL_ID, SECRET) as cloud:
        yield cloud


@pytest.fixture
def cloud_env(standin, tmp_path, monkeypatch) -> Path:
    """In-process tests: python-chi pointed at the stand-in through clouds.yaml only."""
    for key in list(os.environ):
        if key.startswith("OS_") or key in KNOBS:
            monkeypatch.delenv(key)
    path = clouds_yaml(tmp_path / "clouds.yaml", standin.url)
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(path))
    return path


STUB_TERRAFORM = """\
#!{python}
\"\"\"STAND-IN terraform: no OpenStack provider can reach a cloud here. It does what infra/ and
infra/volume/ declare against the Chameleon stand-in, records what it makes there (the
stand-in's /_standin hook), keeps a state of it, and looks up what infra/'s data sources look
up, failing as the provider does when the lease took it along (terraform-provider-openstack
v3.4.0: data_source_openstack_compute_flavor_v2.go "Your query returned no results. Please
change your search criteria and try again."; data_source_openstack_networking_floatingip_v2.go
"No openstack_networking_floatingip_v2 found"). Each call and its environment is logged.\"\"\"
import json, os, signal, sys, urllib.request
from pathlib import Path
import yaml
args = sys.argv[1:]
chdir = next(a.split("=", 1)[1] for a in args if a.startswith("-chdir="))
action = next(a for a in args if not a.startswith("-"))
opt = {{a.split("=", 1)[0]: a.split("=", 1)[1] for a in args if "=" in a}}
given = dict(a[len("-var="):].split("=", 1) for a in args if a.startswith("-var="))
log = Path(os.environ["STUB_LOG"])
with log.open("a") as out:
    out.write(json.dumps({{"args": args, "env": {{k: v for k, v in os.environ.items()
                          if k.startswith(("OS_", "TF_"))}}}}) + "\\n")
module = "volume" if chdir.endswith("/volume") else "infra"
if action == "init":
    sys.exit(0)
kill = os.environ.get("STUB_KILL_ON_APPLY")
if action == "apply" and kill and not Path(kill).exists():
    Path(kill).write_text("killed once")
    os.kill(os.getppid(), signal.SIGKILL)  # `make up` interrupted, right after the lease
    sys.exit(1)
state_file = Path(opt["-state"])
state = json.loads(state_file.read_text()) if state_file.is_file() else {{}}
made = state.get("made", [])
if action == "output":
    print(json.dumps({{k: {{"value": v}} for k, v in state.get("outputs", {{}}).items()}}))
    sys.exit(0)
tfvars = json.loads((state_file.parent / "terraform.tfvars.json").read_text())
cloud = yaml.safe_load(Path(os.environ["OS_CLIENT_CONFIG_FILE"]).read_text())["clouds"]
auth = cloud[tfvars["cloud"]]["auth"]
base = auth["auth_url"].rsplit("/identity", 1)[0]
credential = {{"id": auth["application_credential_id"],
              "secret": auth["application_credential_secret"]}}
body = {{"auth": {{"identity": {{"methods": ["application_credential"],
                               "application_credential": credential}}}}}}
answer = urllib.request.urlopen(urllib.request.Request(base + "/identity/v3/auth/tokens",
         json.dumps(body).encode(), {{"Content-Type": "application/json"}}))
token = answer.headers["X-Subject-Token"]

def call(method, path, payload=None):
    request = urllib.request.Request(base + path, json.dumps(payload).encode() if payload else None,
                                     {{"X-Auth-Token": token, "Content-Type": "application/json"}},
                                     method=method)
    with urllib.request.urlopen(request) as answer:
        text = answer.read()
    return json.loads(text) if text else {{}}

def fail(message):
    print(f"Error: {{message}}", file=sys.stderr)
    sys.exit(1)

def make(kind, name, **extra):
    thing = call("POST", "/_standin/objects", {{"kind": kind, "name": name, **extra}})
    made.append(thing["id"])
    return thing

kvm = tfvars.get("site") == "KVM@TACC"
active = given.get("reservations_active", "true") == "true"
def look_up():
    \"\"\"infra/'s data sources, read by plan, apply and a refreshing destroy.\"\"\"
    if module != "infra" or not active:
        return
    if kvm:
        names = {{f["name"] for f in call("GET", "/compute/v2.1/flavors/detail")["flavors"]}}
        for rid in (tfvars["gpu_reservation_id"], tfvars["services_reservation_id"]):
            if f"reservation:{{rid}}" not in names:
                fail("Your query returned no results. "
                     "Please change your search criteria and try again.")
    else:
        query = f"/network/v2.0/floatingips?floating_ip_address={{tfvars['floating_ip_address']}}"
        if not call("GET", query)["floatingips"]:
            fail("No openstack_networking_floatingip_v2 found")

look_up()
name = tfvars["stack_name"]
if action == "apply" and module == "volume" and not made:
    volume = make("volume", f"{{name}}-data", size=100)
    state["outputs"] = {{"volume_id": volume["id"]}}
elif action == "apply" and module == "infra" and not made:
    hosts = {{f"{{name}}-services": ("services", tfvars["services_reservation_id"], "10.52.0.10")}}
    for n in range(tfvars["gpu_count"]):
        address = f"10.52.0.{{20 + n}}"
        hosts[f"{{name}}-gpu-{{n + 1}}"] = ("worker", tfvars["gpu_reservation_id"], address)
    make("keypair", f"{{name}}-key", public_key=tfvars["public_key"])
    if kvm:
        make("security group", f"{{name}}-hosts")
        fip = call("POST", "/_standin/floatingips", {{"stack": name}})
        made.append(fip["id"])
        gateway = fip["floating_ip_address"]
    else:
        gateway = tfvars["floating_ip_address"]
    for host, (role, rid, address) in hosts.items():
        make("port", f"{{host}}-port", fixed_ips=[{{"ip_address": address}}])
        make("server", host, status="ACTIVE", reservation=rid)
    if tfvars.get("data_volume_id"):
        make("volume attachment", f"{{name}}-data-attachment", volume_id=tfvars["data_volume_id"])
    state["outputs"] = {{"gateway_address": gateway, "ssh_user": "cc",
                         "layout": "kvm" if kvm else "baremetal",
                         "hosts": {{h: {{"private_address": a, "role": r}}
                                   for h, (r, _, a) in hosts.items()}}}}
elif action == "destroy":
    for ident in made:
        call("DELETE", f"/_standin/objects/{{ident}}")
        call("DELETE", f"/_standin/floatingips/{{ident}}")
    made, state["outputs"] = [], {{}}
state["made"] = made
state["resources"] = [{{"type": "stand-in"}}] if made else []
state_file.write_text(json.dumps(state))
"""

STUB_SSH = """\
#!{python}
# STAND-IN ssh: no stack host exists here; record the call and succeed. The health check's
# tunnel (-N with forwards from free local ports) is served here by stand-ins for the remote
# MLflow, Ray dashboard and SeaweedFS (STUB_FAILING=mlflow: MLflow's /health answers 503) until
# the check ends it; `make tunnel`'s own forwards (the services' port numbers) are only recorded.
import http.server, json, os, sys, threading
with open(os.environ["STUB_SSH_LOG"], "a") as log:
    log.write(" ".join(sys.argv[1:]) + "\\n")
if os.environ.get("STUB_SSH_DOWN"):
    sys.exit("ssh: connect to host 129.114.0.10 port 22: Connection timed out")
forwards = [int(a.split(":")[1]) for a in sys.argv[1:] if a.count(":") == 3]
if "-N" not in sys.argv or not forwards or {{5000, 8265, 8333}} & set(forwards):
    sys.exit(0)
ANSWERS = {{
    "/health": (503, "") if os.environ.get("STUB_FAILING") == "mlflow" else (200, "OK"),
    "/api/2.0/mlflow/experiments/search": (200, json.dumps({{"experiments": []}})),
    "/api/version": (200, json.dumps({{"ray_version": "stand-in"}})),
    "/api/jobs/": (200, "[]"),
    "/healthz": (200, ""),
}}
# Ray's Jobs API as a job's submitter meets it (ray/dashboard/modules/job/job_head.py): a
# package unknown until PUT, a submission recorded in STUB_JOBS_LOG, a job that succeeds.
PACKAGES, JOBS = set(), {{}}
class Services(http.server.BaseHTTPRequestHandler):
    def answer(self, status, body=""):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())
    def do_GET(self):
        path = self.path.split("?")[0]
        if path.startswith("/api/packages/"):
            return self.answer(200 if path in PACKAGES else 404)
        if path.startswith("/api/jobs/") and path.rstrip("/") != "/api/jobs":
            job = path.split("/")[3]
            if job not in JOBS:
                return self.answer(404, "job not found")
            if path.endswith("/logs"):
                return self.answer(200, json.dumps({{"logs": "stand-in job ran\\n"}}))
            return self.answer(200, json.dumps({{"status": "SUCCEEDED", "message": ""}}))
        self.answer(*ANSWERS.get(path, (200, "")))
    do_HEAD = do_GET  # S3's HeadBucket
    def do_PUT(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        PACKAGES.add(self.path)
        self.answer(200, "{{}}")
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        body["authorization"] = self.headers.get("Authorization", "")
        JOBS[body["submission_id"]] = body
        with open(os.environ["STUB_JOBS_LOG"], "a") as jobs:
            jobs.write(json.dumps(body) + "\\n")
        answer = {{"job_id": "raysubmit_1", "submission_id": body["submission_id"]}}
        self.answer(200, json.dumps(answer))
    def log_message(self, *args):
        pass
for port in forwards:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Services)
    threading.Thread(target=server.serve_forever, daemon=True).start()
threading.Event().wait()
"""

STUB_ANSIBLE = """\
#!/usr/bin/env python3
# STAND-IN ansible-playbook: record the call, report one host configured; site.yml writes the
# endpoints file and the Ray token (the services' private addresses) and backup.yml a dated
# backup folder, as the real plays do.
import json, os, sys, time
with open(os.environ["STUB_ANSIBLE_LOG"], "a") as log:
    log.write(" ".join(sys.argv[1:]) + "\\n")
if any(arg.endswith("site.yml") for arg in sys.argv):
    state = os.path.dirname(sys.argv[sys.argv.index("-i") + 1])
    secrets = {name: os.path.join(state, "secrets", name) for name in
               ("ray_auth_token", "mlflow_admin_password", "seaweedfs_training_secret_key")}
    for path in secrets.values():
        with open(path, "w") as out:
            out.write("standin-secret\\n")
    endpoints = {
        "mlflow_tracking_uri": "http://10.52.0.10:5000", "mlflow_username": "admin",
        "mlflow_password_file": secrets["mlflow_admin_password"],
        "ray_address": "http://10.52.0.10:8265", "ray_auth_token_file": secrets["ray_auth_token"],
        "object_store": "seaweedfs", "s3_endpoint": "http://10.52.0.10:8333",
        "s3_access_key_id": "stack-training",
        "s3_secret_key_file": secrets["seaweedfs_training_secret_key"],
        "s3_buckets": {"artifacts": "mlflow-artifacts", "checkpoints": "ray-checkpoints",
                       "datasets": "datasets"},
    }
    # Into the file the inventory names, as the real play writes it.
    with open(sys.argv[sys.argv.index("-i") + 1]) as inventory:
        named = [line.split(":", 1)[1].strip() for line in inventory
                 if line.strip().startswith("stack_endpoints_file_name:")]
    with open(os.path.join(state, (named or ["endpoints.json"])[0]), "w") as out:
        json.dump(endpoints, out)
if any(arg.endswith("backup.yml") for arg in sys.argv) and os.environ.get("STUB_BACKUP_FAILS"):
    print("TASK [Dump the tracking database] ****")
    print('fatal: [standin]: FAILED! => {"msg": "pg_dump: error: connection refused"}')
    sys.exit(2)
if any(arg.endswith("backup.yml") for arg in sys.argv):
    extra = json.loads(sys.argv[sys.argv.index("-e") + 1])
    folder = os.path.join(extra["stack_backup_dir"], time.strftime("%Y%m%d-%H%M%S"))
    os.makedirs(folder)
    # Sealed as seal.sh seals it: archives counted in the manifest, every file in SHA256SUMS.
    import hashlib, io, tarfile
    archives = ("artifacts.tar.gz", "run-records.tar.gz", "bucket-ray-checkpoints.tar.gz",
                "bucket-datasets.tar.gz")
    manifest = "".join(f"objects.{name}=0\\n" for name in archives)
    files = {"tracking.dump": b"dump", "auth.dump": b"dump", "manifest.txt": manifest.encode()}
    for name in archives:
        buffer = io.BytesIO()
        tarfile.open(fileobj=buffer, mode="w:gz").close()
        files[name] = buffer.getvalue()
    with open(os.path.join(folder, "SHA256SUMS"), "w") as sums:
        for name, data in files.items():
            with open(os.path.join(folder, name), "wb") as out:
                out.write(data)
            sums.write(f"{hashlib.sha256(data).hexdigest()}  {name}\\n")
print("PLAY RECAP *********")
print("standin : ok=1    changed=1    unreachable=0    failed=0")
"""


def _script(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


@pytest.fixture
def stubs(tmp_path) -> dict[str, Path]:
    bin_dir = tmp_path / "bin"
    ansible = tmp_path / "ansible-venv"
    (ansible / "bin").mkdir(parents=True)
    bin_dir.mkdir()
    _script(bin_dir / "terraform", STUB_TERRAFORM.format(python=sys.executable))
    _script(bin_dir / "ssh", STUB_SSH.format(python=sys.executable))
    _script(ansible / "bin" / "ansible-playbook", STUB_ANSIBLE)
    return {
        "bin": bin_dir,
        "ansible": ansible,
        "terraform_log": tmp_path / "terraform.log",
        "ssh_log": tmp_path / "ssh.log",
        "ansible_log": tmp_path / "ansible.log",
        "kill_marker": tmp_path / "killed-once",
    }


def clean_env() -> dict[str, str]:
    """This process's environment less the developer's OS_* and knobs, and less what earlier
    tests in this process exported (mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI)."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("OS_") and k not in KNOBS and k not in SCRUBBED
    }


def stack_cli(
    cwd: Path, state_dir: Path, *args: str, python: str = sys.executable, **settings: str
) -> subprocess.CompletedProcess:
    """`python -m stack ...` (what the make targets run) from `cwd`, with a clean environment
    (none of the developer's OS_* or knobs) plus `settings`."""
    env = clean_env()
    env.update(
        PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1", STACK_DIR=str(state_dir), CLOUD="chameleon",
        HOME=str(cwd),  # no ~/.config/openstack/clouds.yaml of the developer's
    )  # fmt: skip
    env.update({k: str(v) for k, v in settings.items()})
    return subprocess.run(
        [python, "-m", "stack", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def one_error_line(proc) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: ")
    return line


@pytest.fixture
def home(tmp_path):
    folder = tmp_path / "home"
    folder.mkdir()
    return folder


def with_stubs(stubs, **settings) -> dict:
    return {
        "PATH": f"{stubs['bin']}:{os.environ['PATH']}",
        "ANSIBLE_VENV": str(stubs["ansible"]),
        "STUB_LOG": str(stubs["terraform_log"]),
        "STUB_SSH_LOG": str(stubs["ssh_log"]),
        "STUB_JOBS_LOG": str(stubs["ssh_log"].with_name("jobs.log")),
        "STUB_ANSIBLE_LOG": str(stubs["ansible_log"]),
        "SSH_ALLOWED_CIDR": "198.51.100.7/32",
        "SSH_TIMEOUT": "5",
        **settings,
    }


def training_cli(home, state, *args: str, python: str = sys.executable, **settings: str):
    """`python -m training ...` (what `make train` runs) on this machine, as the user."""
    env = clean_env()
    env.update(PYTHONPATH=str(REPO), STACK_DIR=str(state), CLOUD="chameleon")
    env.update(settings)
    return subprocess.run([python, "-m", "training", *args], cwd=home, env=env,
                          capture_output=True, text=True, timeout=300, check=False)  # fmt: skip


def made_stack(
    standin, home, tmp_path, stubs, region: str = "KVM@TACC", python: str = sys.executable,
    **extra,
) -> tuple:
    """A stack `make up` made against the stand-in: its state folder and the settings used."""
    path = clouds_yaml(tmp_path / "clouds.yaml", standin.url, region=region)
    if region != "KVM@TACC":
        extra.setdefault("SITE", region)
    state = tmp_path / "state"
    settings = with_stubs(stubs, OS_CLIENT_CONFIG_FILE=str(path), **extra)
    up = stack_cli(home, state, "up", python=python, **settings)
    assert up.returncode == 0, up.stdout + up.stderr
    return state, settings
