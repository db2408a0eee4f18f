"""A STAND-IN for Chameleon's OpenStack APIs on loopback (no Chameleon is reachable here): just
enough of Keystone, Blazar, Nova, Neutron and Cinder for python-chi's real HTTP calls.

Payload shapes and date formats follow Blazar's API (ChameleonCloud/blazar): `created_at`
`%Y-%m-%d %H:%M:%S`, `start_date`/`end_date` `%Y-%m-%dT%H:%M:%S.%f`, errors as
`{"error_code", "error_message", "error_name"}`; a reserved floating IP appears in Neutron at
lease start, tagged `reservation:<reservation id>`. It is not Chameleon: it checks nothing
Chameleon's policy would (quotas, availability), only what the tests set."""

from __future__ import annotations

import json
import re
import threading
import uuid
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LEASE_DATE = "%Y-%m-%dT%H:%M:%S.%f"
CREATED = "%Y-%m-%d %H:%M:%S"
API_DATE = "%Y-%m-%d %H:%M"  # what python-chi and blazarclient send
USER_ID = "5a7e0f1c2b3d4e5f60718293a4b5c6d7"
OTHER_USER_ID = "0000000000000000000000000000beef"
PROJECT_ID = "ae1f0c6ddf7a4c3c8c1ac9d5a5d0e111"
FLAVORS = {
    "g1.h100.pci.1": "e3b0c442-98fc-4c14-9afb-f4c8996fb924",
    "g1.h100.pci.4": "4ad1b4f6-0f0e-4d6e-9a52-6a0c0a3f0c44",
    "m1.xlarge": "5",
}
PUBLIC_NET = "44b38c6b-3e6f-4f50-8d7f-5b3c7d7a0001"


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Chameleon:
    """The stand-in's state, and the knobs tests turn."""

    def __init__(self, credential_id: str, secret: str, region: str = "KVM@TACC") -> None:
        self.credential_id, self.secret, self.region = credential_id, secret, region
        self.leases: dict[str, dict] = {}
        self.floating_ips: list[dict] = []
        self.servers: list[dict] = []
        self.requests: list[tuple[str, str]] = []
        self.bodies: list[tuple[str, str, dict]] = []  # what was POSTed and PUT
        self.start_as = "ACTIVE"  # what a new lease turns into at its first GET
        self.refuse_create: str | None = None
        self.refuse_update: str | None = None
        self.fip_counter = 10
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Chameleon:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def count(self, method: str, pattern: str) -> int:
        return sum(1 for m, path in self.requests if m == method and re.fullmatch(pattern, path))

    # --- Blazar ------------------------------------------------------------------------------
    def add_lease(
        self,
        name: str,
        status: str,
        user_id: str = USER_ID,
        hours: float = 8,
        start: datetime | None = None,
        reservations: list[dict] | None = None,
    ) -> dict:
        start = start or _now()
        lease_id = str(uuid.uuid4())
        lease = {
            "id": lease_id,
            "name": name,
            "user_id": user_id,
            "project_id": PROJECT_ID,
            "status": status,
            "degraded": False,
            "start_date": start.strftime(LEASE_DATE),
            "end_date": (start + timedelta(hours=hours)).strftime(LEASE_DATE),
            "created_at": start.strftime(CREATED),
            "updated_at": None,
            "trust_id": uuid.uuid4().hex,
            "before_end_date": None,
            "events": [],
            "reservations": [self._reservation(lease_id, r) for r in (reservations or [])],
        }
        self.leases[lease_id] = lease
        if status == "ACTIVE":
            self._start(lease)
        return lease

    def _reservation(self, lease_id: str, requested: dict) -> dict:
        reservation = {
            **requested,
            "id": str(uuid.uuid4()),
            "lease_id": lease_id,
            "resource_id": str(uuid.uuid4()),
            "status": "pending",
            "missing_resources": False,
            "resources_changed": False,
            "created_at": _now().strftime(CREATED),
            "updated_at": None,
        }
        if requested["resource_type"] == "physical:host":
            reservation.setdefault("before_end", "default")
            reservation.setdefault("on_start", "default")
        if requested["resource_type"] == "virtual:floatingip":
            reservation.setdefault("required_floatingips", [])
        return reservation

    def _start(self, lease: dict) -> None:
        lease["status"] = "ACTIVE"
        for r in lease["reservations"]:
            r["status"] = "active"
            if r["resource_type"] == "virtual:floatingip":
                self.fip_counter += 1
                self.floating_ips.append({
                    "id": str(uuid.uuid4()),
                    "floating_ip_address": f"203.0.113.{self.fip_counter}",  # documentation range
                    "floating_network_id": PUBLIC_NET,
                    "status": "DOWN",
                    "description": "",
                    "tags": [f"reservation:{r['id']}", "blazar"],
                    "project_id": PROJECT_ID,
                })  # fmt: skip

    def lease_json(self, lease: dict) -> dict:
        if lease["status"] == "PENDING" and self.start_as != "PENDING":
            if self.start_as == "ACTIVE":
                self._start(lease)
            else:
                lease["status"] = self.start_as
        return lease


def _handler(state: Chameleon):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # quiet
            pass

        def _send(self, code: int, body: dict | None = None, headers: dict | None = None):
            data = json.dumps(body).encode() if body is not None else b""
            self.send_response(code)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            if body is not None:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> dict:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            state.bodies.append((self.command, self.path, body))
            return body

        def _error(self, code: int, message: str) -> None:
            self._send(code, {"error_code": code, "error_message": message, "error_name": code})

        def _route(self, method: str) -> None:
            path = self.path.split("?")[0]
            with state._lock:
                state.requests.append((method, path))
                if path == "/identity/v3/auth/tokens" and method == "POST":
                    return self._token()
                if self.headers.get("X-Auth-Token") != "standin-token":
                    return self._send(401, {"error": {"code": 401, "message": "unauthorized"}})
                for prefix, serve in (
                    ("/reservation/v1", self._blazar),
                    ("/compute/v2.1", self._nova),
                    ("/network/v2.0", self._neutron),
                    (f"/volume/v3/{PROJECT_ID}", self._cinder),
                ):
                    if path.startswith(prefix + "/"):
                        return serve(method, path[len(prefix) :])
                return self._send(404, {"error": f"stand-in has no {method} {path}"})

        do_GET = lambda self: self._route("GET")  # noqa: E731
        do_POST = lambda self: self._route("POST")  # noqa: E731
        do_PUT = lambda self: self._route("PUT")  # noqa: E731
        do_DELETE = lambda self: self._route("DELETE")  # noqa: E731

        # --- Keystone ------------------------------------------------------------------
        def _token(self) -> None:
            identity = self._body()["auth"]["identity"]
            credential = identity.get("application_credential") or {}
            if (credential.get("id"), credential.get("secret")) != (
                state.credential_id,
                state.secret,
            ):
                return self._send(
                    401,
                    {
                        "error": {
                            "code": 401,
                            "title": "Unauthorized",
                            "message": "The request you have made requires authentication.",
                        }
                    },
                )

            def service(kind: str, name: str, path: str) -> dict:
                return {
                    "type": kind,
                    "name": name,
                    "id": uuid.uuid4().hex,
                    "endpoints": [
                        {
                            "id": uuid.uuid4().hex,
                            "interface": "public",
                            "region": state.region,
                            "region_id": state.region,
                            "url": state.url + path,
                        }
                    ],
                }

            expires = (datetime.now(UTC) + timedelta(hours=8)).strftime("%Y-%m-%dT%H:%M:%S.000000Z")
            token = {
                "methods": ["application_credential"],
                "expires_at": expires,
                "issued_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000000Z"),
                "user": {"id": USER_ID, "name": "standin-user",
                         "domain": {"id": "default", "name": "Default"}},
                "project": {"id": PROJECT_ID, "name": "CHI-000000",
                            "domain": {"id": "default", "name": "Default"}},
                "roles": [{"id": uuid.uuid4().hex, "name": "member"}],
                "application_credential": {"id": state.credential_id, "name": "stack",
                                           "restricted": False},
                "catalog": [
                    service("identity", "keystone", "/identity/v3"),
                    service("reservation", "blazar", "/reservation/v1"),
                    service("compute", "nova", "/compute/v2.1"),
                    service("network", "neutron", "/network"),
                    service("volumev3", "cinderv3", f"/volume/v3/{PROJECT_ID}"),
                ],
            }  # fmt: skip
            self._send(201, {"token": token}, {"X-Subject-Token": "standin-token"})

        # --- Blazar --------------------------------------------------------------------
        def _blazar(self, method: str, path: str) -> None:
            if path == "/leases" and method == "GET":
                leases = [state.lease_json(lease) for lease in state.leases.values()]
                return self._send(200, {"leases": leases})
            if path == "/leases" and method == "POST":
                body = self._body()
                if state.refuse_create:
                    return self._error(400, state.refuse_create)
                end = datetime.strptime(body["end_date"], API_DATE)
                start = (
                    _now()
                    if body["start_date"] == "now"
                    else datetime.strptime(body["start_date"], API_DATE)
                )
                lease = state.add_lease(
                    body["name"],
                    "PENDING",
                    start=start,
                    hours=(end - start).total_seconds() / 3600,
                    reservations=body["reservations"],
                )
                return self._send(201, {"lease": lease})
            match = re.fullmatch(r"/leases/([^/]+)", path)
            if not match:
                return self._error(404, f"no {path}")
            lease = state.leases.get(match[1])
            if lease is None:
                return self._error(404, f"Object with {{'lease_id': '{match[1]}'}} not found")
            if method == "GET":
                return self._send(200, {"lease": state.lease_json(lease)})
            if method == "DELETE":
                del state.leases[lease["id"]]
                fip_ids = {f"reservation:{r['id']}" for r in lease["reservations"]}
                state.floating_ips[:] = [
                    f for f in state.floating_ips if not fip_ids & set(f["tags"])
                ]
                return self._send(204)
            if method == "PUT":
                body = self._body()
                if state.refuse_update:
                    return self._error(400, state.refuse_update)
                end = datetime.strptime(body["end_date"], API_DATE)
                lease["end_date"] = end.strftime(LEASE_DATE)
                lease["updated_at"] = _now().strftime(CREATED)
                return self._send(200, {"lease": lease})
            return self._error(405, method)

        # --- Nova ----------------------------------------------------------------------
        def _flavor(self, name: str, flavor_id: str) -> dict:
            return {"id": flavor_id, "name": name, "vcpus": 8, "ram": 16384, "disk": 40,
                    "OS-FLV-EXT-DATA:ephemeral": 0, "swap": 0, "rxtx_factor": 1.0,
                    "os-flavor-access:is_public": True, "extra_specs": {},
                    "description": None, "links": []}  # fmt: skip

        def _nova(self, method: str, path: str) -> None:
            if path == "/flavors/detail":
                flavors = [self._flavor(n, i) for n, i in FLAVORS.items()]
                return self._send(200, {"flavors": flavors})
            if match := re.fullmatch(r"/flavors/([^/]+)", path):
                for name, flavor_id in FLAVORS.items():
                    if match[1] == flavor_id:
                        return self._send(200, {"flavor": self._flavor(name, flavor_id)})
                return self._send(
                    404, {"itemNotFound": {"code": 404, "message": "Flavor could not be found."}}
                )
            if path == "/servers/detail":
                return self._send(200, {"servers": state.servers})
            if path == "/os-keypairs":
                return self._send(200, {"keypairs": []})
            return self._send(404, {"itemNotFound": {"code": 404, "message": path}})

        # --- Neutron -------------------------------------------------------------------
        def _neutron(self, method: str, path: str) -> None:
            if path == "/networks":
                return self._send(200, {"networks": [
                    {"id": PUBLIC_NET, "name": "public", "router:external": True},
                    {"id": str(uuid.uuid4()), "name": "sharednet1", "router:external": False},
                ]})  # fmt: skip
            if path == "/floatingips":
                return self._send(200, {"floatingips": state.floating_ips})
            if path == "/ports":
                return self._send(200, {"ports": []})
            return self._send(404, {"NeutronError": {"message": path}})

        # --- Cinder --------------------------------------------------------------------
        def _cinder(self, method: str, path: str) -> None:
            if path == "/volumes/detail":
                return self._send(200, {"volumes": []})
            return self._send(404, {"itemNotFound": {"message": path}})

    return Handler
