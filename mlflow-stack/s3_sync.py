#!/usr/bin/env python3
"""Copy every object under an s3:// prefix to a local directory, or back.

Usage: s3_sync.py download s3://bucket/prefix LOCAL_DIR
       s3_sync.py upload LOCAL_DIR s3://bucket/prefix
Endpoint and credentials come from S3_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY.
Used by backup.sh/restore.sh with the MLflow venv's Python (it has boto3).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def _split(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri}")
    bucket, _, prefix = uri[5:].partition("/")
    return bucket, prefix.strip("/")


def _client():
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=os.environ.get("S3_ENDPOINT_URL") or None,
        region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
    )


def download(uri: str, dest: Path) -> int:
    bucket, prefix = _split(uri)
    s3 = _client()
    count = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            rel = obj["Key"][len(prefix) :].lstrip("/") if prefix else obj["Key"]
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, obj["Key"], str(target))
            count += 1
    return count


def upload(src: Path, uri: str) -> int:
    bucket, prefix = _split(uri)
    s3 = _client()
    count = 0
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        key = "/".join(filter(None, [prefix, path.relative_to(src).as_posix()]))
        s3.upload_file(str(path), bucket, key)
        count += 1
    return count


def main(argv: list[str]) -> int:
    if len(argv) != 4 or argv[1] not in ("download", "upload"):
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    if argv[1] == "download":
        n = download(argv[2], Path(argv[3]))
    else:
        n = upload(Path(argv[2]), argv[3])
    print(f"{argv[1]}ed {n} objects")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
