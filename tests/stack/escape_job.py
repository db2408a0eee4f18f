"""The escape attempts, run inside a real Ray job on the stack (tests/stack/test_escape.py
submits it): as the job's user, with the environment every job gets (the `training` MLflow
login and S3 keys), it tries each way around those credentials and prints one line per attempt,
`ESCAPE {"name": ..., "how": ..., "blocked": true|false, "detail": ...}`, then the front doors
it must still have (`FRONT_DOOR {...}`) and a summary line. The job's driver runs on the Ray
head, which is the services host; with "workers" in the settings, the attempts a GPU worker
host can make against the services host also run there, as Ray tasks pinned to each worker node
(tests/sim/test_sim_stack.py).

    python escape_job.py '{"node_ip": ..., "ports": {...}, "buckets": {...}, "paths": {...}}'

Only the standard library and what Ray's venv holds (grpcio) are used. An attempt counts as
blocked only when the request was refused before it reached the service (connection refused
or reset, permission denied) or the service refused it for want of credentials (401, 403,
UNAUTHENTICATED, a password asked for); anything else is reported as not blocked."""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import os
import socket
import struct
import sys
import urllib.error
import urllib.parse
import urllib.request

MINTED = ("escape-minted-key", "escape-minted-secret-0123456789abcdefghij")
DENIED_STATUS = {401, 403}


def refused(err: BaseException) -> bool:
    """A request stopped on its way: refused, reset, not permitted, or dropped (no answer to
    the connection at all: another host's firewall)."""
    return isinstance(
        err, (ConnectionRefusedError, ConnectionResetError, PermissionError, TimeoutError)
    ) or (isinstance(err, OSError) and err.errno in {1, 13, 104, 110, 111})


def connects(host: str, port: int) -> OSError | None:
    """None when a TCP connection is made, else why not. A host's own firewall resets at once;
    another host's drops, and 3 s without an answer on one network is no answer."""
    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError as err:
        return err
    return None


# --- HTTP -------------------------------------------------------------------------------------


def http(url: str, method: str = "GET", body: bytes | None = None, headers: dict | None = None):
    """(status, text) of a request; raises OSError when no connection is made."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read(300).decode(errors="replace")
    except urllib.error.HTTPError as err:
        return err.code, err.read(300).decode(errors="replace")
    except urllib.error.URLError as err:
        raise err.reason if isinstance(err.reason, OSError) else OSError(str(err.reason)) from None


def http_attempt(url: str, method: str = "GET", body: bytes | None = None, headers=None):
    where = urllib.parse.urlparse(url)
    if (err := connects(where.hostname, where.port or 80)) is not None:
        return refused(err), f"no connection: {err}"
    try:
        status, text = http(url, method, body, headers)
    except OSError as err:
        return refused(err), f"no connection: {err}"
    return status in DENIED_STATUS, f"HTTP {status} {text[:120]!r}"


def unix_http_attempt(path: str, request_line: str):
    """An HTTP request over a Unix socket (SeaweedFS serves its filer and S3 API on some)."""
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(path)
            sock.sendall(f"{request_line} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
            answer = sock.recv(200).decode(errors="replace")
    except OSError as err:
        return refused(err), f"no connection: {err}"
    status = answer.split(" ")[1] if answer.startswith("HTTP/") else answer[:40]
    return status in {"401", "403"}, f"answered {status}"


# --- S3 (signature version 4, by hand: no boto3 in Ray's venv) ---------------------------------


def s3(method: str, path: str, query: str = "", body: bytes = b"", keys=None):
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    access, secret = keys or (os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"])
    region = os.environ.get("AWS_DEFAULT_REGION", "us-east-1")
    host = urllib.parse.urlparse(endpoint).netloc
    now = datetime.datetime.now(datetime.UTC)
    stamp, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    digest = hashlib.sha256(body).hexdigest()
    signed = "host;x-amz-content-sha256;x-amz-date"
    canonical = "\n".join([
        method,
        urllib.parse.quote(path),
        "&".join(sorted(p if "=" in p else p + "=" for p in query.split("&") if p)),
        f"host:{host}\nx-amz-content-sha256:{digest}\nx-amz-date:{stamp}\n",
        signed,
        digest,
    ])  # fmt: skip
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = (
        f"AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    )
    key = ("AWS4" + secret).encode()
    for part in (day, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers = {
        "x-amz-date": stamp,
        "x-amz-content-sha256": digest,
        "Authorization": f"AWS4-HMAC-SHA256 Credential={access}/{scope}, "
        f"SignedHeaders={signed}, Signature={signature}",
    }
    url = endpoint + urllib.parse.quote(path) + (f"?{query}" if query else "")
    return http(url, method, body if method in {"PUT", "POST"} else None, headers)


def s3_attempt(method: str, path: str, query: str = "", body: bytes = b"", keys=None):
    try:
        status, text = s3(method, path, query, body, keys)
    except OSError as err:
        return refused(err), f"no connection: {err}"
    return status in DENIED_STATUS, f"HTTP {status} {text[:120]!r}"


# --- gRPC (raw bytes: no generated stubs needed) -----------------------------------------------


def grpc_attempt(target: str, method: str, request: bytes = b""):
    """A gRPC call without credentials. Blocked: no connection, or the server refused it for
    want of them (UNAUTHENTICATED, PERMISSION_DENIED); any other answer reached the service."""
    import grpc

    if not target.startswith("unix:"):
        host, port = target.rsplit(":", 1)
        if (err := connects(host, int(port))) is not None:
            return refused(err), f"no connection: {err}"
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        try:
            call(request, timeout=10)
        except grpc.RpcError as err:
            code = err.code()
            denied = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}
            return code in denied, f"{code.name}: {(err.details() or '')[:120]}"
    return False, "answered OK"


def grpc_unix_attempt(path: str, method: str):
    if not os.path.lexists(path):
        return False, f"{path} does not exist: nothing was tried"
    try:  # the socket's permissions decide before gRPC does
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(path)
    except OSError as err:
        return refused(err), f"no connection: {err}"
    return grpc_attempt(f"unix:{path}", method)


def field(number: int, data: bytes) -> bytes:
    """A length-delimited protobuf field (lengths here stay under 128)."""
    return bytes([number << 3 | 2, len(data)]) + data


def put_identity_request() -> bytes:
    """iam_pb.PutIdentityRequest{identity: {name, credentials: [{access, secret}],
    actions: [Admin]}}."""
    credential = field(1, MINTED[0].encode()) + field(2, MINTED[1].encode())
    identity = field(1, b"escapee") + field(2, credential) + field(3, b"Admin")
    return field(1, identity)


def minted_key_attempt(host: str, port: int):
    blocked, detail = grpc_attempt(
        f"{host}:{port}",
        "/messaging_pb.SeaweedS3IamCache/PutIdentity",
        put_identity_request(),
    )
    used, used_detail = s3_attempt("GET", "/", keys=MINTED)
    return blocked and used, f"PutIdentity: {detail}; the minted key: {used_detail}"


# --- PostgreSQL (its wire protocol's start-up message, by hand) --------------------------------


def postgresql_attempt(user: str, address: tuple[str, int] | str):
    """A start-up message to PostgreSQL at (host, port) or on a Unix socket path."""
    if not isinstance(address, str) and (err := connects(*address)) is not None:
        return refused(err), f"no connection: {err}"
    params = f"user\0{user}\0database\0mlflow\0\0".encode()
    message = struct.pack("!ii", 8 + len(params), 196608) + params
    try:
        family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
        with socket.socket(family) as sock:
            sock.settimeout(10)
            sock.connect(address)
            sock.sendall(message)
            answer = sock.recv(512)
    except OSError as err:
        return refused(err), f"no connection: {err}"
    if answer[:1] == b"R":
        code = struct.unpack("!i", answer[5:9])[0]
        return (
            code != 0,
            "logged in without a password" if code == 0 else f"password asked for (auth {code})",
        )
    if answer[:1] == b"E":
        text = [p[1:].decode(errors="replace") for p in answer[5:].split(b"\0") if p[:1] == b"M"]
        return True, f"refused: {text[0] if text else answer[:80]!r}"
    return False, f"unexpected answer {answer[:40]!r}"


# --- files -------------------------------------------------------------------------------------


def read_attempt(path: str):
    try:
        with open(path, "rb") as handle:
            handle.read(1)
    except OSError as err:
        return refused(err), f"{type(err).__name__}: {err.strerror}"
    return False, f"read {path}"


# --- MLflow ------------------------------------------------------------------------------------


def mlflow(path: str, method: str = "GET", body: dict | None = None):
    """(status, text) of a call to MLflow's REST API with the job's own (training) login."""
    login = f"{os.environ['MLFLOW_TRACKING_USERNAME']}:{os.environ['MLFLOW_TRACKING_PASSWORD']}"
    headers = {
        "Authorization": "Basic " + base64.b64encode(login.encode()).decode(),
        "Content-Type": "application/json",
    }
    url = f"{os.environ['MLFLOW_TRACKING_URI']}/api/2.0/mlflow/{path}"
    return http(url, method, json.dumps(body).encode() if body else None, headers)


def mlflow_attempt(path: str, method: str, body: dict):
    try:
        status, text = mlflow(path, method, body)
    except OSError as err:
        return refused(err), f"no connection: {err}"
    return status in DENIED_STATUS, f"HTTP {status} {text[:120]!r}"


# --- the attempts ------------------------------------------------------------------------------

LOCAL = "127.0.0.1"
JSON = {"Content-Type": "application/json"}
LOOKUP = "/filer_pb.SeaweedFiler/LookupDirectoryEntry"
COLLECTIONS = "/master_pb.Seaweed/CollectionList"
VOLUME_STATUS = "/volume_server_pb.VolumeServer/VolumeServerStatus"
PUT_IDENTITY = "/messaging_pb.SeaweedS3IamCache/PutIdentity"
GCS_NODES = "/ray.rpc.NodeInfoGcsService/GetAllNodeInfo"
NEW_PASSWORD = "escapee-password-0123456789"


def credential_attempts(c: dict) -> list[tuple[str, str, object]]:
    """Around the job's own logins, from any host: other buckets, MLflow's admin API."""
    artifacts, checkpoints = c["buckets"]["artifacts"], c["buckets"]["checkpoints"]
    user = os.environ.get("MLFLOW_TRACKING_USERNAME", "")
    return [
        ("S3: write to the artifacts bucket with the training key", "PUT <artifacts>/escape.txt",
         lambda: s3_attempt("PUT", f"/{artifacts}/escape.txt", body=b"escape")),
        ("S3: list the artifacts bucket with the training key", "GET <artifacts>?list-type=2",
         lambda: s3_attempt("GET", f"/{artifacts}", "list-type=2")),
        ("S3: delete the checkpoints bucket with the training key", "DELETE <checkpoints>",
         lambda: s3_attempt("DELETE", f"/{checkpoints}")),
        ("S3: make a bucket with the training key", "PUT /escape-bucket",
         lambda: s3_attempt("PUT", "/escape-bucket")),
        ("MLflow: make a user with the training login", "POST users/create",
         lambda: mlflow_attempt("users/create", "POST",
                                {"username": "escapee", "password": NEW_PASSWORD})),
        ("MLflow: make the training login an admin", "PATCH users/update-admin",
         lambda: mlflow_attempt("users/update-admin", "PATCH",
                                {"username": user, "is_admin": True})),
        ("MLflow: change the admin's password with the training login",
         "PATCH users/update-password",
         lambda: mlflow_attempt("users/update-password", "PATCH",
                                {"username": "admin", "password": NEW_PASSWORD})),
    ]  # fmt: skip


def head_attempts(c: dict) -> list[tuple[str, str, object]]:
    """(name, how, attempt) from the services host itself, where the job's driver runs: each
    attempt returns (blocked, detail)."""
    ports, paths, node = c["ports"], c["paths"], c["node_ip"]
    artifacts = c["buckets"]["artifacts"]
    filer, master = f"http://{LOCAL}:{ports['filer']}", f"http://{LOCAL}:{ports['master']}"
    dashboard = f"http://{c['dashboard_host']}:{ports['ray_dashboard']}"
    agent = f"http://{node}:{ports['ray_dashboard_agent_http']}"
    return [
        ("filer: delete the MLflow artifacts bucket over HTTP",
         "DELETE /buckets/<artifacts>/?recursive=true",
         lambda: http_attempt(f"{filer}/buckets/{artifacts}/?recursive=true", "DELETE")),
        ("filer: list the buckets over HTTP", "GET /buckets/",
         lambda: http_attempt(f"{filer}/buckets/")),
        ("filer: its Unix socket", "GET /buckets/ on the filer's HTTP socket",
         lambda: unix_http_attempt(paths["filer_socket"], "GET /buckets/")),
        ("filer: gRPC", "SeaweedFiler/LookupDirectoryEntry",
         lambda: grpc_attempt(f"{LOCAL}:{ports['filer_grpc']}", LOOKUP)),
        ("filer: gRPC over its Unix socket", "LookupDirectoryEntry on its /tmp socket",
         lambda: grpc_unix_attempt(paths["filer_grpc_socket"], LOOKUP)),
        ("volume server: HTTP", "GET /status",
         lambda: http_attempt(f"http://{LOCAL}:{ports['volume']}/status")),
        ("volume server: gRPC", "VolumeServer/VolumeServerStatus",
         lambda: grpc_attempt(f"{LOCAL}:{ports['volume_grpc']}", VOLUME_STATUS)),
        ("master: a write token", "GET /dir/assign",
         lambda: http_attempt(f"{master}/dir/assign")),
        ("master: drop the artifacts bucket's volumes", "GET /col/delete?collection=<artifacts>",
         lambda: http_attempt(f"{master}/col/delete?collection={artifacts}")),
        ("master: gRPC", "Seaweed/CollectionList",
         lambda: grpc_attempt(f"{LOCAL}:{ports['master_grpc']}", COLLECTIONS)),
        ("master: gRPC over its Unix socket", "CollectionList on its /tmp socket",
         lambda: grpc_unix_attempt(paths["master_grpc_socket"], COLLECTIONS)),
        ("S3 gRPC: mint an admin key", "SeaweedS3IamCache/PutIdentity, then S3 with that key",
         lambda: minted_key_attempt(c["s3_host"], ports["s3_grpc"])),
        ("S3 gRPC: over its Unix socket", "PutIdentity on its /tmp socket",
         lambda: grpc_unix_attempt(paths["s3_grpc_socket"], PUT_IDENTITY)),
        ("S3 API: its Unix socket", "an unsigned GET / on the S3 API's socket",
         lambda: unix_http_attempt(paths["s3_socket"], "GET /")),
        ("SeaweedFS: read the admin key", "read its s3.json",
         lambda: read_attempt(paths["s3_identities"])),
        ("SeaweedFS: read its signing keys", "read its security.toml",
         lambda: read_attempt(paths["seaweedfs_security"])),
        ("PostgreSQL: log in as mlflow without its password", "start-up message on 127.0.0.1",
         lambda: postgresql_attempt("mlflow", (LOCAL, ports["postgresql"]))),
        ("PostgreSQL: the superuser over its Unix socket", "start-up as postgres (peer)",
         lambda: postgresql_attempt("postgres", paths["postgresql_socket"])),
        ("PostgreSQL: read the database passwords", "read /etc/mlflow/backup.env",
         lambda: read_attempt(paths["mlflow_backup_env"])),
        *credential_attempts(c),
        ("Ray GCS without the token", "NodeInfoGcsService/GetAllNodeInfo",
         lambda: grpc_attempt(f"{node}:{ports['ray_gcs']}", GCS_NODES)),
        ("Ray client server without the token", "RayletDriver/ClusterInfo",
         lambda: grpc_attempt(f"{node}:{ports['ray_client_server']}",
                              "/ray.rpc.RayletDriver/ClusterInfo")),
        ("Ray dashboard without the token", "GET /api/jobs/",
         lambda: http_attempt(f"{dashboard}/api/jobs/")),
        ("Ray Jobs API: submit a job without the token", "POST /api/jobs/",
         lambda: http_attempt(f"{dashboard}/api/jobs/", "POST",
                              json.dumps({"entrypoint": "id"}).encode(), JSON)),
        ("Ray dashboard agent: submit a job without the token", "POST /api/job_agent/jobs/",
         lambda: http_attempt(f"{agent}/api/job_agent/jobs/", "POST",
                              json.dumps({"entrypoint": "id", "submission_id": "escape"}).encode(),
                              JSON)),
    ]  # fmt: skip


def worker_attempts(c: dict) -> list[tuple[str, str, object]]:
    """From a GPU worker host, at the services host's private address: its internal ports
    (SeaweedFS, PostgreSQL) must not even connect; the front doors refuse what is not the job's."""
    ports, head, artifacts = c["ports"], c["node_ip"], c["buckets"]["artifacts"]
    return [
        ("S3 gRPC from a worker host: mint an admin key", "PutIdentity at the services host",
         lambda: minted_key_attempt(head, ports["s3_grpc"])),
        ("filer from a worker host: delete the artifacts bucket", "DELETE on the services host",
         lambda: http_attempt(f"http://{head}:{ports['filer']}/buckets/{artifacts}/?recursive=true",
                              "DELETE")),
        ("filer gRPC from a worker host", "LookupDirectoryEntry at the services host",
         lambda: grpc_attempt(f"{head}:{ports['filer_grpc']}", LOOKUP)),
        ("master from a worker host: drop the artifacts bucket's volumes", "GET /col/delete",
         lambda: http_attempt(f"http://{head}:{ports['master']}/col/delete?collection={artifacts}")),
        ("master gRPC from a worker host", "CollectionList at the services host",
         lambda: grpc_attempt(f"{head}:{ports['master_grpc']}", COLLECTIONS)),
        ("volume server from a worker host", "GET /status at the services host",
         lambda: http_attempt(f"http://{head}:{ports['volume']}/status")),
        ("PostgreSQL from a worker host", "start-up message at the services host",
         lambda: postgresql_attempt("mlflow", (head, ports["postgresql"]))),
        *credential_attempts(c),
        ("Ray GCS from a worker host without the token", "GetAllNodeInfo at the head",
         lambda: grpc_attempt(f"{head}:{ports['ray_gcs']}", GCS_NODES)),
        ("Ray dashboard from a worker host without the token", "GET /api/jobs/ at the head",
         lambda: http_attempt(f"http://{c['dashboard_host']}:{ports['ray_dashboard']}/api/jobs/")),
    ]  # fmt: skip


def front_doors(c: dict) -> list[tuple[str, object]]:
    """(name, request): what the job must still do; each request returns (status, text)."""
    key = f"/{c['buckets']['checkpoints']}/escape-check.txt"
    return [
        ("S3 with the training key: put on the checkpoints bucket",
         lambda: s3("PUT", key, body=b"ok")),
        ("S3 with the training key: read it back", lambda: s3("GET", key)),
        ("S3 with the training key: delete it", lambda: s3("DELETE", key)),
        ("MLflow with the training login", lambda: mlflow("experiments/search?max_results=1")),
    ]  # fmt: skip


def run(where: str, tried: list, c: dict) -> list[dict]:
    """Each attempt's outcome, then each front door's, as dicts."""
    out = []
    for name, how, attempt in tried:
        try:
            stopped, detail = attempt()
        except Exception as err:  # noqa: BLE001 - an attempt that breaks is reported, not blocked
            stopped, detail = False, f"the attempt itself failed: {type(err).__name__}: {err}"
        out.append({"kind": "ESCAPE", "where": where, "name": name, "how": how,
                    "blocked": stopped, "detail": detail})  # fmt: skip
    for name, door in front_doors(c):
        try:
            status, text = door()
            ok, detail = 200 <= status < 300, f"HTTP {status} {text[:80]!r}"
        except Exception as err:  # noqa: BLE001 - a door that breaks is reported as closed
            ok, detail = False, f"{type(err).__name__}: {err}"
        out.append({"kind": "FRONT_DOOR", "where": where, "name": name, "open": ok,
                    "detail": detail})  # fmt: skip
    return out


def on_worker(c: dict) -> list[dict]:
    """What a GPU worker host's job code gets (run there as a Ray task)."""
    return run(socket.gethostname(), worker_attempts(c), c)


def main() -> int:
    c = json.loads(sys.argv[1])
    results = run(f"{socket.gethostname()} (services host)", head_attempts(c), c)
    if c.get("workers"):
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        ray.init()
        here = ray.get_runtime_context().get_node_id()
        nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"] and n["NodeID"] != here]
        task = ray.remote(num_cpus=0)(on_worker)
        pending = [
            task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False)).remote(
                c
            )
            for n in nodes
        ]
        for found in ray.get(pending):
            results.extend(found)
    for item in results:
        print(item.pop("kind") + " " + json.dumps(item), flush=True)
    tried = [r for r in results if "blocked" in r]
    blocked = sum(r["blocked"] for r in tried)
    print(f"escape attempts: {len(tried)} tried, {blocked} blocked", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
