"""What a stack job sends: what git tracks or does not ignore (plus the DATA=/MODEL= files
named, even git-ignored ones), never credentials, never HF_TOKEN in its runtime environment,
and not more than the upload limit. The Ray client is a stand-in that records what
`submit_job` was given and which files the staged working dir held: no cluster needed."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from core.errors import UserError
from core.state import Endpoints
from training import jobs
from training.targets import Target


def stack_target(tmp_path: Path, **fields) -> Target:
    """A client's view of a stack (its endpoints are never contacted: the client is a
    stand-in)."""
    stack = Endpoints("http://127.0.0.1:5000", "admin", "/dev/null", "http://127.0.0.1:8265", "")
    fields.setdefault("stack", stack)
    return Target("local", tmp_path / "state", "http://127.0.0.1:5000", "s3://b/p", None, **fields)


class StandInJobs:
    """Stands in for training.rayjobs.JobsClient: records each submission."""

    def __init__(self) -> None:
        self.submitted: list[dict] = []

    def submit_job(self, entrypoint: str, submission_id: str, runtime_env: dict) -> str:
        folder = Path(runtime_env["working_dir"])
        files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
        self.submitted.append({"runtime_env": runtime_env, "files": files, "entry": entrypoint})
        return submission_id


@pytest.fixture
def repo(tmp_path, monkeypatch) -> Path:
    """A git checkout standing in for the repository: tracked code, an ignored file."""
    root = (tmp_path / "repo").resolve()
    (root / "training").mkdir(parents=True)
    (root / "training" / "code.py").write_text("print('hi')\n")
    (root / ".gitignore").write_text("big/\nsecret-notes.txt\n")
    (root / "secret-notes.txt").write_text("do not send\n")
    (root / "big").mkdir()
    (root / "big" / "data.csv").write_text("text,label\nok,1\n")
    git = ["git", "-C", str(root), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "init"], check=True)
    (root / "notes.md").write_text("untracked, not ignored\n")
    monkeypatch.setattr(jobs, "REPO_ROOT", root)
    monkeypatch.chdir(root)
    return root


@pytest.fixture
def cluster(monkeypatch) -> StandInJobs:
    standin = StandInJobs()
    monkeypatch.setattr(jobs, "client", lambda endpoints: standin)
    monkeypatch.setattr(jobs, "_follow", lambda *a, **k: 0)
    return standin


def test_sends_tracked_and_unignored_files_and_the_named_data(repo, cluster, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code = jobs.submit(
        "train", {"task": "classify", "data": "big/data.csv"}, stack_target(repo.parent)
    )
    assert code == 0
    (sent,) = cluster.submitted
    # The test's own repository: not a repository path of the project.
    sent_files = [".gitignore", "big/data.csv", "notes.md", "training/code.py"]
    assert sent["files"] == sent_files
    assert "secret-notes.txt" not in sent["files"]  # git ignores it
    env = sent["runtime_env"]["env_vars"]
    assert "HF_TOKEN" not in env and "hf_secret_value" not in repr(sent)
    assert env["HF_HUB_OFFLINE"] == "1"  # a setting, not a secret: it still travels
    assert "excludes" not in sent["runtime_env"]
    assert not Path(sent["runtime_env"]["working_dir"]).exists()  # the staged copy is gone


@pytest.mark.parametrize(
    "name",
    ["clouds.yaml", "conf/CHI-123-openrc.sh", "ssh/id_rsa", "tls/server.pem", ".env", "a.key",
     "old-state/local/secrets/token", "ssh/id_ed25519", "ssh/id_ed25519.pub", ".netrc",
     ".env.production", "old-state/backups/local/20260101-000000/auth.dump"],
)  # fmt: skip
def test_credentials_are_refused_and_nothing_is_sent(repo, cluster, name):
    path = repo / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("secret\n")
    if name.startswith("old-state"):
        (repo / "old-state" / ".chameleon-mlops-state").write_text("")
        (repo / "old-state" / "local").mkdir(exist_ok=True)
        (repo / "old-state" / "local" / "stack.json").write_text("{}")
    with pytest.raises(UserError) as refused:
        jobs.submit("train", {"task": "classify"}, stack_target(repo.parent))
    message = str(refused.value)
    assert "looks like credentials" in message and "nothing was sent" in message
    assert "\n" not in message
    assert cluster.submitted == []


def test_an_upload_over_the_limit_names_its_size_and_largest_files(repo, cluster, monkeypatch):
    monkeypatch.setattr(jobs, "UPLOAD_LIMIT_MIB", 1)
    (repo / "weights.bin").write_bytes(b"\0" * (3 * 2**20))
    with pytest.raises(UserError) as refused:
        jobs.submit("train", {"task": "classify"}, stack_target(repo.parent))
    message = str(refused.value)
    assert "would be 3 MiB, over the 1 MiB limit; largest: weights.bin (3 MiB)" in message
    assert cluster.submitted == []


def test_a_job_learns_its_stack_s_cloud_lease_end_hardware_and_mlflow_address(repo, cluster):
    target = stack_target(
        repo.parent, lease_end="2026-12-03T10:00:00+00:00", hardware="g1.h100.pci.1"
    )
    target.cloud = "chameleon"
    assert jobs.submit("train", {"task": "classify"}, target) == 0
    env = cluster.submitted[0]["runtime_env"]["env_vars"]
    assert env["STACK_CLOUD"] == "chameleon"
    assert env["STACK_LEASE_END"] == "2026-12-03T10:00:00+00:00"
    assert env["STACK_HARDWARE"] == "g1.h100.pci.1"
    # Run links printed by the job point where the user's browser reaches MLflow.
    assert env["STACK_MLFLOW_UI"] == "http://127.0.0.1:5000"
