"""Checks an existing S3 endpoint before the stack uses it: it answers, the keys are accepted,
and each bucket exists (a missing one is created when the keys may).

    S3_ACCESS_KEY=... S3_SECRET_KEY=... python check_buckets.py ENDPOINT BUCKET [BUCKET ...]

Prints `created <bucket>` / `exists <bucket>`; a problem is one line on stderr, exit 1.
"""

from __future__ import annotations

import os
import sys

import boto3
from botocore.client import Config
from botocore.exceptions import ClientError, EndpointConnectionError

REFUSED_KEYS = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken"}


def main(argv: list[str]) -> int:
    endpoint, buckets = argv[1], argv[2:]
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=os.environ["S3_ACCESS_KEY"],
        aws_secret_access_key=os.environ["S3_SECRET_KEY"],
        region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        config=Config(
            retries={"max_attempts": 1},
            connect_timeout=5,
            read_timeout=10,
            s3={"addressing_style": "path"},
        ),
    )
    for bucket in buckets:
        try:
            s3.head_bucket(Bucket=bucket)
            print(f"exists {bucket}")
            continue
        except EndpointConnectionError as err:
            return fail(
                f"S3_ENDPOINT={endpoint} does not answer ({err.fmt.split(':')[0]}): "
                "check the address and that the server runs"
            )
        except ClientError as err:
            status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if status == 403 or err.response["Error"].get("Code") in REFUSED_KEYS:
                return fail(
                    f"S3_ENDPOINT={endpoint} refused the keys on bucket {bucket} ({status}): check "
                    "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or S3_ACCESS_KEY_FILE/"
                    "S3_SECRET_KEY_FILE"
                )
            if status != 404:
                return fail(f"S3_ENDPOINT={endpoint}: bucket {bucket} answered {status}")
        except Exception as err:  # noqa: BLE001 - anything else on the way is one line too
            return fail(f"S3_ENDPOINT={endpoint} cannot be used: {type(err).__name__}: {err}")
        try:
            s3.create_bucket(Bucket=bucket)
            print(f"created {bucket}")
        except ClientError as err:
            code = err.response["Error"].get("Code", "")
            return fail(
                f"bucket {bucket} does not exist on S3_ENDPOINT={endpoint} and these keys may not "
                f"create it ({code}): create it, or use keys that may"
            )
    return 0


def fail(message: str) -> int:
    print(message, file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
