"""The HTTP side of the Chameleon STAND-IN (tests/chameleon/standin.py holds the state): the
routes python-chi, python-blazarclient, novaclient and neutronclient call, each answering in
the shape the cited code builds, and `/_standin/...`, the stand-in's own hook through which
the stand-in `terraform` of tests/chameleon/conftest.py records what it makes."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs

from tests.chameleon.standin import (
    API_DATE,
    LEASE_DATE,
    PROJECT_ID,
    PUBLIC_NET,
    SHAREDNET,
    USER_ID,
    Chameleon,
    _error,
    now,
)

TOKEN = "standin-token"


def handler(state: Chameleon):
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

        def _route(self, method: str) -> None:
            path, _, query = self.path.partition("?")
            self.query = {k: v[0] for k, v in parse_qs(query).items()}
            with state._lock:
                state.requests.append((method, path))
                if path == "/identity/v3/auth/tokens" and method == "POST":
                    return self._token()
                if self.headers.get("X-Auth-Token") != TOKEN:
                    return self._send(401, {"error": {"code": 401, "message": "unauthorized"}})
                for prefix, serve in (
                    ("/reservation/v1", self._blazar),
                    ("/compute/v2.1", self._nova),
                    ("/network/v2.0", self._neutron),
                    (f"/volume/v3/{PROJECT_ID}", self._cinder),
                    ("/_standin", self._hook),
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
            """POST /v3/auth/tokens with an application credential: 201, X-Subject-Token,
            the token with its catalog (openstack/keystone@30ef2ffa api-ref/source/v3/samples/
            admin/auth-application-credential-response.json). The reservation endpoint ends in
            /v1, so keystoneauth matches it without a discovery request."""
            identity = self._body()["auth"]["identity"]
            credential = identity.get("application_credential") or {}
            if (credential.get("id"), credential.get("secret")) != (
                state.credential_id,
                state.secret,
            ):
                return self._send(401, {"error": {
                    "code": 401, "title": "Unauthorized",
                    "message": "The request you have made requires authentication.",
                }})  # fmt: skip

            def service(kind: str, name: str, path: str) -> dict:
                endpoint = {"id": uuid.uuid4().hex, "interface": "public",
                            "region": state.region, "region_id": state.region,
                            "url": state.url + path}  # fmt: skip
                return {"type": kind, "name": name, "id": uuid.uuid4().hex,
                        "endpoints": [endpoint]}  # fmt: skip

            stamp = "%Y-%m-%dT%H:%M:%S.000000Z"
            token = {
                "methods": ["application_credential"],
                "expires_at": (datetime.now(UTC) + timedelta(hours=8)).strftime(stamp),
                "issued_at": datetime.now(UTC).strftime(stamp),
                "audit_ids": [uuid.uuid4().hex[:22]], "is_domain": False,
                "user": {"id": USER_ID, "name": "standin-user", "password_expires_at": None,
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
            self._send(201, {"token": token}, {"X-Subject-Token": TOKEN})

        # --- Blazar (blazar/api/v1/leases/v1_0.py, oshosts/v1_0.py) --------------------
        def _error(self, code: int, message: str) -> None:
            self._send(code, _error(code, message))

        def _blazar(self, method: str, path: str) -> None:
            if path == "/leases" and method == "GET":
                leases = [state.lease_json(lease) for lease in state.leases.values()]
                return self._send(200, {"leases": leases})
            if path == "/leases" and method == "POST":
                return self._create_lease(self._body())
            if path == "/os-hosts" and method == "GET":
                return self._send(200, {"hosts": state.hosts})
            if path == "/os-hosts/allocations" and method == "GET":
                return self._send(200, {"allocations": self._allocations()})
            match = re.fullmatch(r"/leases/([^/]+)", path)
            if not match:
                return self._error(404, f"no {path}")
            lease = state.leases.get(match[1])
            if lease is None:  # validation.check_exists -> exceptions.NotFound
                return self._error(404, f"Object with {{'lease_id': '{match[1]}'}} not found")
            if method == "GET":
                return self._send(200, {"lease": state.lease_json(lease)})
            if method == "DELETE":
                state.delete(lease["id"])
                return self._send(200, {})  # the Chameleon fork renders status=200, {}
            if method == "PUT":
                return self._send(*state.update(lease["id"], self._body()))
            return self._error(405, method)

        def _create_lease(self, body: dict) -> None:
            """blazar/manager/service.py `create_lease`: dates checked, then the lease
            (PENDING) with its reservations; 201 {"lease": ...}."""
            if state.refuse_create:
                return self._error(400, state.refuse_create)
            start = now() if body["start_date"] == "now" else _date(body["start_date"])
            end = _date(body["end_date"])
            if start < now() - timedelta(minutes=1):
                return self._error(400, "Start date must be later than current date")
            if end <= start:
                return self._error(400, "End date must be later than start date.")
            lease = state.add_lease(
                body["name"],
                "PENDING",
                start=start,
                hours=(end - start).total_seconds() / 3600,
                reservations=body["reservations"],
            )
            self._send(201, {"lease": lease})

        def _allocations(self) -> list[dict]:
            """host_plugin.py `list_allocations`: each host's reservations whose lease has
            not ended (no `status`, `lease_name`, `project_id` for a non-admin; `extras`)."""
            found = []
            for host in state.hosts:
                reservations = [
                    {"id": r["id"], "lease_id": lease["id"], "start_date": lease["start_date"],
                     "end_date": lease["end_date"], "extras": {}}
                    for lease in state.leases.values()
                    for r in lease["reservations"]
                    if host["id"] in state.allocated.get(r["id"], [])
                    and datetime.strptime(lease["end_date"], LEASE_DATE) >= now()
                ] + state.booked.get(host["id"], [])  # fmt: skip
                found.append({"resource_id": host["id"], "reservations": reservations})
            return found

        # --- Nova (nova/api/openstack/compute/flavors.py, views/flavors.py) ------------
        def _not_found(self, what: str) -> None:
            # nova/api/openstack/wsgi.py Fault: {"itemNotFound": {...}}.
            self._send(
                404, {"itemNotFound": {"code": 404, "message": f"{what} could not be found."}}
            )

        def _nova(self, method: str, path: str) -> None:
            flavors = state.visible_flavors()
            if path == "/flavors/detail":
                return self._send(200, {"flavors": flavors})
            if path == "/flavors":
                basic = [{k: f[k] for k in ("id", "name", "links", "description")} for f in flavors]
                return self._send(200, {"flavors": basic})
            if match := re.fullmatch(r"/flavors/([^/]+)(/os-extra_specs)?", path):
                found = [f for f in flavors if f["id"] == match[1]]
                if not found:
                    return self._not_found(f"Flavor {match[1]}")
                if match[2]:
                    return self._send(200, {"extra_specs": found[0]["extra_specs"]})
                return self._send(200, {"flavor": found[0]})
            if path == "/servers/detail":
                return self._send(200, {"servers": state.servers})
            if path == "/os-keypairs":  # nova keypairs index: [{"keypair": {...}}]
                pairs = [{"keypair": k} for k in state.objects["keypair"]]
                return self._send(200, {"keypairs": pairs})
            return self._not_found(path)

        # --- Neutron (neutron/db/*: networks, ports, floating IPs, security groups) ----
        def _neutron(self, method: str, path: str) -> None:
            if path == "/networks":
                # python-chi lists every network and picks "public" itself (chi/network.py).
                return self._send(200, {"networks": [
                    {"id": PUBLIC_NET, "name": "public", "status": "ACTIVE", "subnets": [],
                     "admin_state_up": True, "router:external": True, "shared": False,
                     "project_id": PROJECT_ID, "tenant_id": PROJECT_ID, "tags": [],
                     "description": "", "mtu": 1500},
                    {"id": SHAREDNET, "name": "sharednet1", "status": "ACTIVE", "subnets": [],
                     "admin_state_up": True, "router:external": False, "shared": True,
                     "project_id": PROJECT_ID, "tenant_id": PROJECT_ID, "tags": [],
                     "description": "", "mtu": 1500},
                ]})  # fmt: skip
            if path == "/floatingips":
                address = self.query.get("floating_ip_address")
                fips = [f for f in state.floating_ips
                        if not address or f["floating_ip_address"] == address]  # fmt: skip
                return self._send(200, {"floatingips": fips})
            if path == "/ports":
                return self._send(200, {"ports": state.objects["port"]})
            if path == "/security-groups":
                return self._send(200, {"security_groups": state.objects["security group"]})
            # neutron/api/api_common.py get_exception_data, wrapped as NeutronError.
            return self._send(404, {"NeutronError": {"type": "HTTPNotFound", "message": path,
                                                     "detail": ""}})  # fmt: skip

        # --- Cinder --------------------------------------------------------------------
        def _cinder(self, method: str, path: str) -> None:
            if path == "/volumes/detail":
                return self._send(200, {"volumes": state.objects["volume"]})
            return self._send(404, {"itemNotFound": {"code": 404, "message": path}})

        # --- the stand-in's own hook (not an OpenStack API) -----------------------------
        def _hook(self, method: str, path: str) -> None:
            if path == "/objects" and method == "POST":
                made = {"id": str(uuid.uuid4()), **self._body()}
                state.objects[made.pop("kind")].append(made)
                return self._send(201, made)
            if path == "/floatingips" and method == "POST":
                return self._send(201, state.allocate_fip(self._body()["stack"]))
            if match := re.fullmatch(r"/(objects|floatingips)/([^/]+)", path):
                if match[1] == "floatingips":
                    state.floating_ips[:] = [f for f in state.floating_ips if f["id"] != match[2]]
                for objects in state.objects.values():
                    objects[:] = [o for o in objects if o["id"] != match[2]]
                return self._send(204)
            return self._send(404, {"error": path})

    return Handler


def _date(text: str) -> datetime:
    return datetime.strptime(text, API_DATE)
