"""`make backup` and `make restore`, and the check of a backup folder on this machine before
anything is deleted or restored.

The services host checked the dumps (`pg_restore --list`) and archives and wrote SHA256SUMS
(mlflow-stack/seal.sh); the manifest counts the files each archive holds. Here every file is
hashed again and every archive read to its end and counted, so a copy that arrived damaged or
incomplete is never the only copy left."""

from __future__ import annotations

import hashlib
import os
import tarfile
from pathlib import Path

from core.errors import UserError
from stack import playbook
from stack.state import Stack

CHECKSUMS = "SHA256SUMS"
MANIFEST = "manifest.txt"
# What every backup holds: both databases, MLflow's artifacts and the head's run records; the
# checkpoints and datasets buckets come on top (bucket-<name>.tar.gz, named by the stack).
ALWAYS = ("tracking.dump", "auth.dump", "artifacts.tar.gz", "run-records.tar.gz")


def make(stack: Stack) -> Path:
    """Back the stack's data up into .stack/backups/<name>/<dated folder> and verify the copy
    here (a purge deletes nothing when this fails)."""
    if not stack.is_up:
        raise UserError(f"stack {stack.name!r} is not up; `make up` first, then `make backup`")
    stack.backups.mkdir(mode=0o700, parents=True, exist_ok=True)
    before = set(stack.backups.iterdir())
    playbook.run(
        "backup.yml",
        stack.inventory,
        stack.log_file("backup"),
        {"stack_backup_dir": str(stack.backups)},
        what="backing up the stack",
    )
    (folder,) = set(stack.backups.iterdir()) - before
    for path in [folder, *folder.iterdir()]:
        os.chmod(path, 0o700 if path.is_dir() else 0o600)
    verify(folder, stack.display(folder), _buckets(stack))
    return folder


def chosen(stack: Stack, given: str) -> Path:
    """The backup folder BACKUP= names (a path, or a folder name under the stack's backups),
    verified, for a stack that is up."""
    if not given:
        raise UserError(
            f"BACKUP= names the backup to restore: `make restore BACKUP=<folder>` "
            f"(`ls {stack.display(stack.backups)}` lists this stack's)"
        )
    folder = Path(given).expanduser()
    if not folder.is_dir() and (stack.backups / given).is_dir():
        folder = stack.backups / given
    if not folder.is_dir():
        raise UserError(f"BACKUP={given} is not a folder; name one `make backup` wrote")
    if not stack.is_up:
        raise UserError(f"stack {stack.name!r} is not up; `make up` first, then `make restore`")
    verify(folder, given, _buckets(stack))
    return folder


def restore(stack: Stack, folder: Path, safety: Path) -> None:
    """Put the verified backup `folder` into the running stack. The databases are replaced
    both or neither (mlflow-stack/restore.sh); a failure says where the data as it was is."""
    try:
        playbook.run(
            "restore.yml",
            stack.inventory,
            stack.log_file("restore"),
            {"stack_restore_dir": str(folder.resolve())},
            what=f"restoring {stack.display(folder)}",
        )
    except UserError as exc:
        raise UserError(
            f"{exc}; MLflow's databases are as they were unless the failure came after them, "
            f"and the safety backup {stack.display(safety)} holds all of the data as it was "
            f"(`make restore BACKUP={safety.name}`)"
        ) from None


def _buckets(stack: Stack) -> tuple[str, ...]:
    """The checkpoints and datasets buckets every backup of this stack holds."""
    named = stack.endpoints().s3_buckets if stack.endpoints() else {}
    return tuple(named[b] for b in ("checkpoints", "datasets") if b in named)


def problems(folder: Path, buckets: tuple[str, ...] = ()) -> list[str]:
    """What is wrong with a backup folder; empty when it is whole."""
    sums = folder / CHECKSUMS
    if not sums.is_file():
        return [f"{CHECKSUMS} is missing (the backup was not sealed)"]
    listed = {}
    for line in sums.read_text().splitlines():
        digest, _, name = line.partition("  ")
        listed[name] = digest
    found = []
    for name in (*ALWAYS, *(f"bucket-{b}.tar.gz" for b in buckets), MANIFEST):
        if name not in listed:
            found.append(f"{name} is not in {CHECKSUMS}")
    for name, digest in listed.items():
        path = folder / name
        if not path.is_file():
            found.append(f"{name} is missing")
        elif _sha256(path) != digest:
            found.append(f"{name} does not match its checksum")
    if found:
        return found
    counts = _counts(folder / MANIFEST)
    for name in listed:
        if name.endswith(".tar.gz") and name not in counts:
            found.append(f"the manifest does not count the files of {name}")
    for name, count in counts.items():
        try:
            with tarfile.open(folder / name) as tar:
                files = sum(1 for member in tar if member.isfile())
        except (OSError, tarfile.TarError) as exc:
            found.append(f"{name} does not read: {exc}")
            continue
        if files != count:
            found.append(f"{name} holds {files} files, the manifest counted {count}")
    return found


def verify(folder: Path, shown: str, buckets: tuple[str, ...] = ()) -> None:
    """Raise a UserError naming what is wrong with the backup (shown: its folder as displayed)."""
    if found := problems(folder, buckets):
        raise UserError(f"backup {shown} cannot be verified: {'; '.join(found)}")


def _counts(manifest: Path) -> dict[str, int]:
    counts = {}
    for line in manifest.read_text().splitlines():
        key, _, value = line.partition("=")
        if key.startswith("objects.") and value.strip().isdigit():
            counts[key.removeprefix("objects.")] = int(value)
    return counts


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
