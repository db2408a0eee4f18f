"""Where Ray keeps checkpoints: a local folder, or object storage under `s3://bucket/prefix`.

For `s3://` the endpoint and keys come from the standard AWS variables, so the same settings
reach the stack's MinIO (or any S3 API) and AWS itself:

- `AWS_ENDPOINT_URL_S3`, else `AWS_ENDPOINT_URL`: the endpoint, e.g. `http://10.0.0.5:9000`
  (its scheme picks http or https). Without either, pyarrow's AWS defaults apply.
- `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`): the keys.
- `AWS_REGION` / `AWS_DEFAULT_REGION`: the region (us-east-1 if unset; MinIO ignores it)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from core.errors import UserError

if TYPE_CHECKING:
    import pyarrow.fs

# What a Ray worker on another machine needs to reach the same object storage.
WORKER_VARIABLES = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
)


def is_s3(storage_path: str) -> bool:
    return storage_path.startswith("s3://")


def endpoint() -> str | None:
    """The S3 endpoint the environment names, or None for AWS's own."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def s3_filesystem(endpoint_url: str) -> pyarrow.fs.S3FileSystem:
    """An S3 filesystem on `endpoint_url` with the keys and region of the environment."""
    from pyarrow.fs import S3FileSystem

    url = urlparse(endpoint_url)
    if url.scheme not in ("http", "https") or not url.netloc:
        raise UserError(
            f"the S3 endpoint {endpoint_url!r} (AWS_ENDPOINT_URL) is not a URL; give it as "
            "http://host:port or https://host"
        )
    return S3FileSystem(
        endpoint_override=url.netloc,
        scheme=url.scheme,
        access_key=os.environ.get("AWS_ACCESS_KEY_ID") or None,
        secret_key=os.environ.get("AWS_SECRET_ACCESS_KEY") or None,
        session_token=os.environ.get("AWS_SESSION_TOKEN") or None,
        region=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
    )


def ray_storage(storage_path: str) -> tuple[str, pyarrow.fs.FileSystem | None]:
    """`(storage_path, storage_filesystem)` for Ray's RunConfig and Tuner.restore.

    With a filesystem of our own, Ray wants the path without its `s3://` (RunConfig's docs);
    without an endpoint variable Ray resolves `s3://` itself with AWS's defaults."""
    url = endpoint()
    if not is_s3(storage_path) or url is None:
        return storage_path, None
    return storage_path.removeprefix("s3://").rstrip("/"), s3_filesystem(url)


def check(storage_path: str) -> None:
    """Stop before anything starts if an `s3://` storage's bucket cannot be reached."""
    if not is_s3(storage_path):
        return
    from pyarrow.fs import FileSystem, FileType

    _, filesystem = ray_storage(storage_path)
    bucket = storage_path.removeprefix("s3://").split("/", 1)[0]
    where = f"at {endpoint()}" if endpoint() else "on AWS (no AWS_ENDPOINT_URL set)"
    try:
        if filesystem is None:
            filesystem, _ = FileSystem.from_uri(storage_path)
        found = filesystem.get_file_info(bucket).type
    except (OSError, ValueError) as exc:
        raise UserError(
            f"cannot reach the checkpoint storage {storage_path} {where} "
            f"({str(exc).splitlines()[0]}); check CHECKPOINT_STORAGE, AWS_ENDPOINT_URL and "
            "the AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY keys"
        ) from None
    if found != FileType.Directory:
        raise UserError(
            f"the checkpoint storage {storage_path} has no bucket {bucket!r} {where}; "
            "create it or fix CHECKPOINT_STORAGE"
        )


@contextmanager
def local_folder(checkpoint, name: str) -> Iterator[Path]:
    """The folder `name` of a Ray checkpoint as a local path: in place for local storage,
    else a temporary download of that folder alone (not the optimizer shards beside it)."""
    from pyarrow.fs import FileType, LocalFileSystem, copy_files

    if isinstance(checkpoint.filesystem, LocalFileSystem):
        yield Path(checkpoint.path) / name
        return
    scratch = Path(tempfile.mkdtemp(prefix="ckpt-download-"))
    try:
        destination = scratch / name
        source = f"{checkpoint.path.rstrip('/')}/{name}"
        if checkpoint.filesystem.get_file_info(source).type == FileType.Directory:
            destination.mkdir()  # copy_files makes only the folders below it
            copy_files(source, str(destination), source_filesystem=checkpoint.filesystem)
        yield destination
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def remove(storage_path: str) -> None:
    """Remove a folder of Ray's files (a probe's) from a local folder or object storage."""
    if not is_s3(storage_path):
        shutil.rmtree(storage_path, ignore_errors=True)
        return
    from pyarrow.fs import FileSystem

    path, filesystem = ray_storage(storage_path)
    if filesystem is None:
        filesystem, path = FileSystem.from_uri(storage_path)
    with contextlib.suppress(OSError):  # gone already, or never written
        filesystem.delete_dir(path)


def worker_environment() -> dict[str, str]:
    """The storage variables of this environment, for Ray workers (credentials stay in env)."""
    return {key: os.environ[key] for key in WORKER_VARIABLES if os.environ.get(key)}
