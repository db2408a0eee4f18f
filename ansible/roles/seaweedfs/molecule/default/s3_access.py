"""Least privilege of the stack's S3 identities, checked against a running server.

    python s3_access.py ENDPOINT IDENTITIES_JSON [ARTIFACTS CHECKPOINTS DATASETS]

Keys are read from the server's identities file (the seaweedfs role's s3.json: root only).
Each check prints one line; the exit status is the number of failed checks.
Checks: an object round trip (put, list, get, delete) with each identity on its own buckets;
wrong keys refused; mlflow refused on the checkpoints bucket and training on the artifacts
bucket; neither can create or delete a bucket.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import boto3
from botocore.client import Config
from botocore.exceptions import ClientError


def client(endpoint: str, access: str, secret: str):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access,
        aws_secret_access_key=secret,
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}, s3={"addressing_style": "path"}),
    )


def identity_keys(config: Path) -> dict[str, tuple[str, str]]:
    """Identity name -> (access key, secret key)."""
    identities = json.loads(config.read_text())["identities"]
    return {
        i["name"]: (i["credentials"][0]["accessKey"], i["credentials"][0]["secretKey"])
        for i in identities
    }


def round_trip(s3, bucket: str) -> None:
    key = "s3-access-check/object.txt"
    s3.put_object(Bucket=bucket, Key=key, Body=b"round trip")
    listed = [
        o["Key"]
        for o in s3.list_objects_v2(Bucket=bucket, Prefix="s3-access-check/").get("Contents", [])
    ]
    assert key in listed, f"{key} not listed in {bucket}"
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"round trip"
    s3.delete_object(Bucket=bucket, Key=key)


def refused(action) -> str | None:
    """None when the server refused the request, else what happened."""
    try:
        action()
    except ClientError as err:
        code = err.response.get("Error", {}).get("Code", "")
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if status == 403 or code in {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"}:
            return None
        return f"failed otherwise: {code} ({status})"
    return "was allowed"


def main(argv: list[str]) -> int:
    endpoint, keys = argv[1], identity_keys(Path(argv[2]))
    artifacts, checkpoints, datasets = argv[3:6] or [
        "mlflow-artifacts",
        "ray-checkpoints",
        "datasets",
    ]
    s3 = {name: client(endpoint, *keys[name]) for name in ("admin", "mlflow", "training")}
    wrong = client(endpoint, keys["mlflow"][0], "not-the-secret-key-0123456789abcdefghij")
    failures = 0

    def check(name: str, outcome: str | None) -> None:
        nonlocal failures
        failures += outcome is not None
        mark, why = ("ok  ", "") if outcome is None else ("FAIL", f": {outcome}")
        print(f"{mark} {name}{why}")

    def works(action) -> str | None:
        try:
            action()
        except (ClientError, AssertionError) as err:
            return str(err)
        return None

    for identity, buckets in (
        ("admin", [artifacts, checkpoints, datasets]),
        ("mlflow", [artifacts]),
        ("training", [checkpoints, datasets]),
    ):
        for bucket in buckets:
            check(
                f"{identity} round trip on {bucket}",
                works(lambda b=bucket, c=s3[identity]: round_trip(c, b)),
            )
    check(
        "wrong secret key refused",
        refused(lambda: wrong.put_object(Bucket=artifacts, Key="x", Body=b"x")),
    )
    for identity, bucket in (
        ("mlflow", checkpoints),
        ("mlflow", datasets),
        ("training", artifacts),
    ):
        c = s3[identity]
        check(
            f"{identity} put refused on {bucket}",
            refused(lambda c=c, b=bucket: c.put_object(Bucket=b, Key="x", Body=b"x")),
        )
        check(
            f"{identity} list refused on {bucket}",
            refused(lambda c=c, b=bucket: c.list_objects_v2(Bucket=b)),
        )
    for identity, own in (("mlflow", artifacts), ("training", checkpoints)):
        c = s3[identity]
        check(
            f"{identity} cannot create a bucket",
            refused(lambda c=c, b=f"{identity}-made-this": c.create_bucket(Bucket=b)),
        )
        check(
            f"{identity} cannot delete {own}", refused(lambda c=c, b=own: c.delete_bucket(Bucket=b))
        )
    names = {b["Name"] for b in s3["admin"].list_buckets()["Buckets"]}
    check(
        "the buckets are all still there",
        None if {artifacts, checkpoints, datasets} <= names else f"left: {sorted(names)}",
    )
    check(
        "no bucket was made by mlflow or training",
        None if not {"mlflow-made-this", "training-made-this"} & names else "one was",
    )
    return failures


if __name__ == "__main__":
    sys.exit(main(sys.argv))
