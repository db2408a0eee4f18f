#!/usr/bin/env python3
"""Create S3 buckets on the stack's object store (MinIO) if they are missing.

Usage: S3_ENDPOINT_URL=http://127.0.0.1:9000 AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... \
       create_buckets.py BUCKET [BUCKET ...]

Prints one line per bucket, "created NAME" or "exists NAME" (Ansible reads "created" as a
change), and exits non-zero with one line on stderr when the endpoint refuses the request.
Needs only boto3 (the minio role installs it in a small venv; the MLflow venv has it too).
"""

from __future__ import annotations

import os
import sys


def ensure_buckets(endpoint_url: str, names: list[str]) -> list[str]:
    """Create the missing buckets; return one "created/exists NAME" line per bucket."""
    import boto3
    from botocore.exceptions import ClientError

    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
    )
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    lines = []
    for name in names:
        if name in existing:
            lines.append(f"exists {name}")
            continue
        try:
            s3.create_bucket(Bucket=name)
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("BucketAlreadyOwnedByYou",):
                lines.append(f"exists {name}")
                continue
            raise
        lines.append(f"created {name}")
    return lines


def main(argv: list[str]) -> int:
    endpoint = os.environ.get("S3_ENDPOINT_URL", "")
    if not endpoint or len(argv) < 2:
        print(
            "usage: S3_ENDPOINT_URL=http://host:9000 create_buckets.py BUCKET [...]",
            file=sys.stderr,
        )
        return 2
    try:
        for line in ensure_buckets(endpoint, argv[1:]):
            print(line)
    except Exception as err:  # noqa: BLE001 - one clear line for the operator, not a traceback
        print(f"create_buckets: {endpoint}: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
