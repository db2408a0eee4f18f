"""Checking a backup folder on this machine before anything is deleted or restored.

The services host checked the dumps (`pg_restore --list`) and archives and wrote SHA256SUMS
(mlflow-stack/seal.sh); the manifest counts the files each archive holds. Here every file is
hashed again and every archive read to its end and counted, so a copy that arrived damaged or
incomplete is never the only copy left."""

from __future__ import annotations

import hashlib
import tarfile
from pathlib import Path

from core.errors import UserError

CHECKSUMS = "SHA256SUMS"
MANIFEST = "manifest.txt"
# What every backup holds: both databases, MLflow's artifacts and the head's run records; the
# checkpoints and datasets buckets come on top (bucket-<name>.tar.gz, named by the stack).
ALWAYS = ("tracking.dump", "auth.dump", "artifacts.tar.gz", "run-records.tar.gz")


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
