"""Commands on a stack: `make train` (tune, bench, study) runs as a Ray job on the stack's
cluster.

The job carries the working tree as git sees it (tracked files plus untracked ones git does not
ignore, and the DATA=/MODEL=/SPACE= files named), staged into a temporary folder that becomes
Ray's working_dir; files that look like credentials are refused and the upload has a size limit.
The user's settings travel as key=value arguments; tracking, checkpoint storage and their
credentials (HF_TOKEN too) come from the Ray nodes' own environment (set by the Ansible ray
role), so no secret travels with the job.
It speaks Ray's Jobs API over plain HTTP (training/rayjobs.py: no Ray needed here), through SSH
forwards of its own where the stack's services are remote (core/tunnel.py).
The job's log is streamed here; Ctrl-C leaves the job running and says how to follow or stop it."""

from __future__ import annotations

import fnmatch
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from core import tunnel
from core.errors import UserError, root_cause
from core.paths import REPO_ROOT
from core.state import Endpoints
from training.rayjobs import FINAL, JobNotFound, JobsClient
from training.targets import Target

# Folders a DATA=/MODEL=/SPACE= path may not be in: environments, state, outputs, caches.
EXCLUDES = [
    ".git",
    ".venv",
    ".venv-ansible",
    ".venv-train",
    ".stack",
    "reports",
    "mlruns",
    "mlartifacts",
    "build",
    "*.egg-info",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
]
# Names that look like credentials: a job's files are readable by every holder of the cluster's
# token, so these never travel (nor anything in a state folder: one holding a stack.json, or the
# marker of a STACK_DIR, whose backups/ hold the databases).
CREDENTIALS = (
    "clouds.yaml", "*-openrc.sh", "*.pem", "*.key", "*.ppk", ".env", ".env.*", ".netrc",
    "id_rsa*", "id_dsa*", "id_ecdsa*", "id_ed25519*",
)  # fmt: skip
STATE_FILES = ("stack.json", ".chameleon-mlops-state")
UPLOAD_LIMIT_MIB = 100
# Settings that name files: they must be inside the repository to travel with the job.
PATH_SETTINGS = ("data", "model")
# What bench and tune leave on the cluster, which the client copies back: the MLflow artifact
# folder of their parent run, and the file to point the user at.
REPORTS = {"bench": ("report", "report.md"), "tune": ("search", "best.yaml")}
REPORTS["study"] = REPORTS["bench"]


def client(endpoints: Endpoints) -> JobsClient:
    """The stack's Jobs API with the cluster's token, once it has answered."""
    token = Path(endpoints.ray_auth_token_file).read_text().strip()
    jobs = JobsClient(endpoints.ray_address, token)
    try:
        jobs.version()
    except (OSError, RuntimeError) as exc:
        raise UserError(
            f"the stack's Ray cluster at {endpoints.ray_address} does not answer "
            f"({root_cause(exc)}); {endpoints.unreachable_hint()}"
        ) from None
    return jobs


def carried(value: str, what: str) -> str:
    """A local file or folder as the job will see it (relative to its working dir)."""
    path = Path(value).expanduser()
    if not path.exists():
        return value  # a hub name, or an error the job reports
    path = path.resolve()
    if not path.is_relative_to(REPO_ROOT) or any(
        part in EXCLUDES for part in path.relative_to(REPO_ROOT).parts
    ):
        raise UserError(
            f"{what}={value} is not inside the repository, so the job on the stack cannot see "
            "it; copy it into the repository (e.g. a data/ folder) and point to the copy"
        )
    return str(path.relative_to(REPO_ROOT))


def upload_files(carried_paths: list[str], root: Path | None = None) -> list[str]:
    """What a job sends, relative to `root`: what git tracks plus untracked files it does not
    ignore, plus the carried DATA=/MODEL=/SPACE= paths (git may ignore those)."""
    root = root or REPO_ROOT
    try:
        listed = subprocess.run(
            ["git", "-C", str(root), "ls-files", "--cached", "--others", "--exclude-standard",
             "-z"],
            capture_output=True, check=True,
        ).stdout.decode()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        raise UserError(
            f"{root} is not a git checkout (or git is missing): a job sends what git tracks; "
            "clone the repository with git"
        ) from None
    files = {name for name in listed.split("\0") if name and (root / name).is_file()}
    for value in carried_paths:
        path = root / value
        inside = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        files.update(str(p.relative_to(root)) for p in inside)
    return sorted(files)


def check_upload(files: list[str], root: Path | None = None) -> int:
    """Refuse credentials and an upload over the limit (one line, nothing sent); its size."""
    root = root or REPO_ROOT
    state_folders = {
        str(p.parent.relative_to(root)) for f in files if (p := root / f).name in STATE_FILES
    }
    for name in files:
        parts = Path(name).parts
        under_state = any(str(Path(*parts[:i])) in state_folders for i in range(1, len(parts)))
        if under_state or any(fnmatch.fnmatch(parts[-1], pattern) for pattern in CREDENTIALS):
            raise UserError(
                f"{name} looks like credentials, which a job never sends (the cluster shows a "
                "job's files to every token holder); move it out of the repository or add it "
                "to .gitignore, then run this again (nothing was sent)"
            )
    sizes = {name: (root / name).stat().st_size for name in files}
    total = sum(sizes.values())
    if total > UPLOAD_LIMIT_MIB * 2**20:
        largest = sorted(sizes, key=sizes.get, reverse=True)[:3]
        biggest = ", ".join(f"{n} ({sizes[n] / 2**20:.0f} MiB)" for n in largest)
        raise UserError(
            f"the job's upload would be {total / 2**20:.0f} MiB, over the {UPLOAD_LIMIT_MIB} MiB "
            f"limit; largest: {biggest}; put big data in the object store (s3://...) or "
            "git-ignore it (nothing was sent)"
        )
    return total


def stage(files: list[str], folder: Path, root: Path | None = None) -> None:
    """Copy `files` into `folder`: Ray uploads exactly that folder, nothing else."""
    root = root or REPO_ROOT
    for name in files:
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, target)


def _job(
    command: str, settings: dict, target: Target, space_file: str
) -> tuple[str, str, dict, list[str]]:
    """The job's id, entrypoint, environment (never a secret: the nodes hold those) and the
    files it sends."""
    from training.environment import worker_environment
    from training.settings import job_variables
    from training.tracking import git_commit

    args, carried_paths = [command], []
    for key, value in settings.items():
        if key in PATH_SETTINGS and value:
            value = carried(str(value), key.upper())
            if (REPO_ROOT / value).exists():
                carried_paths.append(value)
        args.append(f"{key}={value}")
    env = {k: os.environ[k] for k in job_variables() if os.environ.get(k)}
    if space_file:
        env["SPACE"] = carried(space_file, "SPACE")
        carried_paths.append(env["SPACE"])
    what = "" if command == "study" else f"-{settings.get('task', 'classify')}"  # TASKS= says
    job_id = f"{command}{what}-{time.strftime('%Y%m%d-%H%M%S')}"
    env.update(worker_environment())
    env.update(TRAINING_GIT_COMMIT=git_commit(), TRAINING_JOB_ID=job_id)
    env.update(target.job_environment())
    files = upload_files(carried_paths)
    check_upload(files)
    return job_id, "python -m training " + shlex.join(args), env, files


def show(command: str, settings: dict, target: Target, space_file: str = "") -> None:
    """DRY_RUN=1 with a stack up: what would be submitted, without contacting the cluster."""
    job_id, entrypoint, env, files = _job(command, settings, target, space_file)
    cloud, endpoints = target.cloud, target.stack
    size = sum((REPO_ROOT / name).stat().st_size for name in files) / 2**20
    print(f"dry run: `make {command}` would submit job {job_id} (nothing sent)")
    print(f"  cluster      the {cloud} stack's Ray Jobs API at {endpoints.ray_address}")
    print(f"  entrypoint   {entrypoint}")
    print(
        f"  sends        {len(files)} files, {size:.1f} MiB of {UPLOAD_LIMIT_MIB} MiB (what git "
        "tracks or does not ignore, and the DATA/MODEL/SPACE files)"
    )
    print(f"  environment  {', '.join(sorted(env))}")
    print("  run records, checkpoints and what would be resumed are the stack's own")


def submit(command: str, settings: dict, target: Target, space_file: str = "") -> int:
    """Run `python -m training <command>` on the target's stack; returns its exit code."""
    job_id, entrypoint, env, files = _job(command, settings, target, space_file)
    with tunnel.opened(target.stack, f"make {command}") as endpoints:
        jobs = client(endpoints)
        with tempfile.TemporaryDirectory(prefix=f"{job_id}-") as staged:
            stage(files, Path(staged))
            jobs.submit_job(
                entrypoint=entrypoint,
                submission_id=job_id,
                runtime_env=runtime_env(Path(staged), env),
            )
        code = _follow(jobs, job_id, endpoints, submitted=True)
        if code == 0 and command in REPORTS:
            fetch_report(command, job_id, endpoints)
    return code


def runtime_env(working_dir: Path, env: dict) -> dict:
    return {"working_dir": str(working_dir), "env_vars": env}


def follow(job_id: str, endpoints: Endpoints) -> int:
    """`make logs`: follow a job until it ends."""
    with tunnel.opened(endpoints, "make logs") as reached:
        return _follow(client(reached), job_id, reached)


def _follow(jobs: JobsClient, job_id: str, endpoints: Endpoints, submitted: bool = False) -> int:
    """Stream a job's log until it ends; its user error becomes ours, one line. Ctrl-C (at
    any moment, even while the job's id is printed) leaves the job running and says how to
    get back to it."""
    try:
        if submitted:
            print(f"submitted job {job_id} to the stack's Ray cluster", flush=True)
        _known(jobs, job_id)
        last_error = _stream(jobs, job_id)
        status = _final_status(jobs, job_id)
    except KeyboardInterrupt:
        print(
            f"\njob {job_id} keeps running on the stack; follow it with `make logs "
            f"JOB={job_id}`, stop it with `make cancel JOB={job_id}`",
            file=sys.stderr,
        )
        return 130
    except UserError:
        raise
    except Exception as exc:  # the head gone: refused connections, a reset, a timeout, ...
        raise UserError(
            f"lost the stack's Ray head at {endpoints.ray_address} while following job "
            f"{job_id} ({root_cause(exc)}); `make status` shows the services, `make up` "
            "repairs them, then `make train ... RESUME=1` continues the run from its last "
            "checkpoint"
        ) from None
    if status == "SUCCEEDED":
        return 0
    if last_error:
        raise UserError(last_error)
    message = (jobs.get_job_info(job_id).get("message") or "").strip()
    raise UserError(f"job {job_id} {status.lower()}: {message or 'see its log above'}")


def _stream(jobs: JobsClient, job_id: str) -> str:
    """Print the job's log as it comes, except its `error:` line, which is returned."""
    last_error = ""
    for chunk in jobs.tail_job_logs(job_id):
        for line in chunk.splitlines(keepends=True):
            if line.startswith("error: "):
                last_error = line.removeprefix("error: ").strip()
            else:
                sys.stdout.write(line)
        sys.stdout.flush()
    return last_error


def fetch_report(command: str, job_id: str, endpoints: Endpoints) -> Path:
    """Copy the report a bench, study or tune job logged to MLflow into reports/ here."""
    from mlflow.artifacts import download_artifacts

    from core.paths import reports_root
    from training.tracking import Tracker

    os.environ["MLFLOW_TRACKING_USERNAME"] = endpoints.mlflow_username
    os.environ["MLFLOW_TRACKING_PASSWORD"] = (
        Path(endpoints.mlflow_password_file).read_text().strip()
    )
    # The server's multipart downloads hand out object-store URLs at the address the server
    # sees, which this machine may not reach (Chameleon's and sim's private network); the
    # report is small and comes through MLflow itself.
    os.environ["MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD"] = "false"
    uri = endpoints.mlflow_tracking_uri
    tracking = Tracker(uri).client
    experiments = [e.experiment_id for e in tracking.search_experiments()]
    runs = tracking.search_runs(experiments, f"tags.ray_job_id = '{job_id}'")
    # The job's parent run: its cells and trials carry the job's tag too.
    (run,) = [found for found in runs if "mlflow.parentRunId" not in found.data.tags]
    artifact, shown = REPORTS[command]
    folder = reports_root() / command / run.info.run_name.removeprefix(f"{command}-")
    with tempfile.TemporaryDirectory() as tmp:
        download_artifacts(
            run_id=run.info.run_id, artifact_path=artifact, dst_path=tmp, tracking_uri=uri
        )
        shutil.copytree(Path(tmp) / artifact, folder, dirs_exist_ok=True)
    shown_path = _display(folder / shown)
    print(f"copied here: {shown_path}")
    if command == "tune":
        print(f"train it:    make train CONFIG={shown_path}")
    return folder


def _display(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def cancel(job_id: str, endpoints: Endpoints) -> None:
    with tunnel.opened(endpoints, "make cancel") as reached:
        jobs = client(reached)
        status = _known(jobs, job_id)
        if status in FINAL:
            print(f"job {job_id} already ended ({status.lower()})")
            return
        jobs.stop_job(job_id)
        status = _final_status(jobs, job_id)
    print(f"job {job_id} {status.lower()}; its checkpoints are kept (RESUME=1 continues it)")


def _known(jobs: JobsClient, job_id: str) -> str:
    try:
        return jobs.get_job_status(job_id)
    except JobNotFound:
        message = f"no job {job_id!r} on the stack; `make status` lists running jobs"
        raise UserError(message) from None


def _final_status(jobs: JobsClient, job_id: str, timeout: float = 60) -> str:
    """The job's end state (the log can end a moment before the status does)."""
    deadline = time.monotonic() + timeout
    while True:
        status = jobs.get_job_status(job_id)
        if status in FINAL or time.monotonic() > deadline:
            return status
        time.sleep(1)
