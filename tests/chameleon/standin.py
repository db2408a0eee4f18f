"""A STAND-IN for Chameleon's OpenStack APIs on loopback (no Chameleon is reachable here): the
state of one project at one site, and a lease's whole life as Blazar lives it. The HTTP routes
that python-chi's real code calls are in standin_api.py.

Every shape served is taken from the projects' own code, cited where it is built; the short
names are pinned commits:
- blazar: ChameleonCloud/blazar@bbd20e846740e3c4547be351996820d3f2330976 (chameleoncloud/2023.1)
- flavor-A: ChameleonCloud/blazar@5204b41a2dc3b67133c52ecb6b682045180dfdae
  blazar/plugins/flavor/flavor_plugin.py (refuses every flavor reservation update)
- flavor-B: ChameleonCloud/blazar@0280aeb0ae081e47c16426d3a1569d009c0c0677, same file (a later
  version that updates a flavor reservation's dates)
- instances: ChameleonCloud/blazar@11091f5065b27874144d3939a364ee70fda7a16d
  blazar/plugins/instances/instance_plugin.py
- nova: openstack/nova@00a030403f672b975364c855b7d25b40ef83e757;
  neutron: openstack/neutron@2131d26f73262ec89a5d3e3e0d65521df4908e65
- python-chi 1.2.10 (= ChameleonCloud/python-chi@f691d6ad chi/lease.py for what it sends)
It is not Chameleon: it checks no quota or policy, only what a test sets."""

from __future__ import annotations

import copy
import json
import re
import threading
import uuid
from datetime import UTC, datetime, timedelta
from http.server import ThreadingHTTPServer

# blazar/db/sqlalchemy/model_base.py `_BlazarBase.to_dict`: created_at/updated_at through
# isoformat(' '); start_date/end_date/event times through oslo.serialization's
# PERFECT_TIME_FORMAT.
LEASE_DATE = "%Y-%m-%dT%H:%M:%S.%f"
CREATED = "%Y-%m-%d %H:%M:%S"
API_DATE = "%Y-%m-%d %H:%M"  # what python-chi and blazarclient send (LEASE_DATE_FORMAT)
USER_ID = "5a7e0f1c2b3d4e5f60718293a4b5c6d7"
OTHER_USER_ID = "0000000000000000000000000000beef"
PROJECT_ID = "ae1f0c6ddf7a4c3c8c1ac9d5a5d0e111"
PUBLIC_NET = "44b38c6b-3e6f-4f50-8d7f-5b3c7d7a0001"
SHAREDNET = "9a0d1c2b-3e4f-4a5b-8c6d-7e8f9a0b1c2d"
# Public flavors: (id, vcpus, ram, disk). g1.h100.pci.1's values are the documentation's
# (ChameleonCloud/docs@50021b6d source/technical/reservations/cli_reservations.rst).
FLAVORS = {
    "g1.h100.pci.1": ("e81f12f8-de06-4107-acfd-e649217036ef", 48, 250000, 40),
    "g1.h100.pci.4": ("4ad1b4f6-0f0e-4d6e-9a52-6a0c0a3f0c44", 192, 1000000, 160),
    "m1.xlarge": ("5", 8, 16384, 160),
}
FLAVOR_UPDATE_REFUSED = "Flavor-based reservation update not yet supported"  # flavor-A


def now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def nova_flavor(name: str, flavor_id: str, vcpus: int, ram: int, disk: int, **extra) -> dict:
    """A flavor as Nova's flavor views show it (nova/api/openstack/compute/views/flavors.py
    `show`), at python-chi's microversion 2.61: `description` (2.55) and the extra specs inline
    (2.61)."""
    return {
        "id": flavor_id, "name": name, "ram": ram, "disk": disk, "swap": "",
        "OS-FLV-EXT-DATA:ephemeral": 0, "OS-FLV-DISABLED:disabled": False, "vcpus": vcpus,
        "os-flavor-access:is_public": True, "rxtx_factor": 1.0,
        "links": [{"rel": "self", "href": f"/compute/v2.1/flavors/{flavor_id}"}],
        "description": None, "extra_specs": {}, **extra,
    }  # fmt: skip


class Chameleon:
    """The stand-in's state, and the knobs tests turn."""

    def __init__(self, credential_id: str, secret: str, region: str = "KVM@TACC") -> None:
        self.credential_id, self.secret, self.region = credential_id, secret, region
        self.leases: dict[str, dict] = {}
        self.flavors = {name: nova_flavor(name, *spec) for name, spec in FLAVORS.items()}
        self.reserved_flavors: dict[str, dict] = {}  # reservation id -> the reserved flavor
        self.floating_ips: list[dict] = []
        # What Terraform made (the stand-in terraform records it here): kind -> objects.
        self.objects: dict[str, list[dict]] = {
            kind: [] for kind in ("server", "port", "keypair", "security group",
                                  "volume", "volume attachment")
        }  # fmt: skip
        self.servers = self.objects["server"]  # Nova's view of the instances
        self.hosts: list[dict] = []  # Blazar's bare-metal hosts (GET /os-hosts)
        self.allocated: dict[str, list[str]] = {}  # host reservation id -> its hosts' ids
        self.booked: dict[str, list[dict]] = {}  # host id -> other projects' reservations
        self.requests: list[tuple[str, str]] = []
        self.bodies: list[tuple[str, str, dict]] = []  # what was POSTed and PUT
        # What a lease turns into when its start time comes: ACTIVE, ERROR (Blazar could not
        # start it), or PENDING (not started yet: the wait times out).
        self.start_as = "ACTIVE"
        self.flavor_updates = "refuse"  # flavor-A; "allow": flavor-B
        self.refuse_create: str | None = None  # 400 from Blazar's create_lease
        self.refuse_update: str | None = None  # 400 from the enforcement filters (non-fatal)
        self.fip_counter = 10
        self._lock = threading.RLock()
        from tests.chameleon.standin_api import handler

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler(self))
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

    def left(self, stack: str) -> dict[str, list[str]]:
        """Everything of stack `stack` still here, by kind (the leases included)."""
        ours = re.compile(rf"^{re.escape(stack)}(-|$)")
        found = {
            kind: [o["name"] for o in objects if ours.match(o.get("name", ""))]
            for kind, objects in self.objects.items()
        }
        found["floating IP"] = [
            f["floating_ip_address"] for f in self.floating_ips
            if f"stack={stack}" in f.get("tags", []) or self._reserved_by(stack, f)
        ]  # fmt: skip
        found["lease"] = [lease["name"] for lease in self.leases.values() if lease["name"] == stack]
        return {kind: names for kind, names in found.items() if names}

    def _reserved_by(self, stack: str, fip: dict) -> bool:
        ids = {
            f"reservation:{r['id']}"
            for lease in self.leases.values()
            if lease["name"] == stack
            for r in lease["reservations"]
        }
        return bool(ids & set(fip.get("tags", [])))

    # --- Blazar: a lease's life ---------------------------------------------------------------
    def add_lease(
        self,
        name: str,
        status: str,
        user_id: str = USER_ID,
        hours: float = 8,
        start: datetime | None = None,
        reservations: list[dict] | None = None,
    ) -> dict:
        """A lease as blazar/manager/service.py `create_lease` leaves it (status PENDING), made
        to reach `status` the way Blazar gets there."""
        with self._lock:
            start = start or now()
            end = start + timedelta(hours=hours)
            lease_id = str(uuid.uuid4())
            lease = {
                "id": lease_id, "name": name, "user_id": user_id, "project_id": PROJECT_ID,
                "start_date": start.strftime(LEASE_DATE), "end_date": end.strftime(LEASE_DATE),
                "trust_id": uuid.uuid4().hex, "status": "PENDING", "degraded": False,
                "created_at": now().strftime(CREATED), "updated_at": None,
                "reservations": [], "events": [],
            }  # fmt: skip
            # blazar/db/sqlalchemy/models.py Event: start_lease and end_lease, UNDONE.
            for event, when in (("start_lease", start), ("end_lease", end)):
                lease["events"].append({
                    "id": str(uuid.uuid4()), "lease_id": lease_id, "event_type": event,
                    "time": when.strftime(LEASE_DATE), "status": "UNDONE",
                    "created_at": now().strftime(CREATED), "updated_at": None,
                })  # fmt: skip
            lease["reservations"] = [self._reserve(lease, r) for r in reservations or []]
            self.leases[lease_id] = lease
            if status in ("ACTIVE", "ERROR", "TERMINATED"):
                self.start(lease_id, "ACTIVE" if status == "TERMINATED" else status)
            if status == "TERMINATED":
                self.end(lease_id)
            return lease

    def _reserve(self, lease: dict, requested: dict) -> dict:
        """A reservation as it reads back (blazar models.py `Reservation.to_dict`)."""
        stamp = now().strftime(CREATED)
        reservation = {
            "id": str(uuid.uuid4()), "lease_id": lease["id"], "resource_id": str(uuid.uuid4()),
            "resource_type": requested["resource_type"], "status": "pending",
            "missing_resources": False, "resources_changed": False,
            "created_at": stamp, "updated_at": None,
        }  # fmt: skip
        kind = requested["resource_type"]
        if kind == "flavor:instance":
            # flavor-A `reserve_resource`: the requested flavor's Nova show body without its
            # links, plus its extra specs, as JSON in resource_properties; flavor_id becomes the
            # reserved flavor's id, which is the reservation id (`_create_flavor`:
            # flavorid=reservation_id).
            source = copy.deepcopy(self._flavor_by_id(requested["flavor_id"]))
            source.pop("links", None)
            source.pop("description", None)
            reservation.update(
                vcpus=source["vcpus"], memory_mb=source["ram"], disk_gb=source["disk"],
                amount=int(requested["amount"]), affinity=None, flavor_id=reservation["id"],
                aggregate_id=len(self.leases) + 40, server_group_id=None,
                resource_properties=json.dumps(source),
            )  # fmt: skip
        elif kind == "physical:host":
            wanted = json.loads(requested["resource_properties"])[2]
            free = [h["id"] for h in self.hosts if h.get("node_type") == wanted]
            self.allocated[reservation["id"]] = free[: int(requested["max"])]
            # blazar/plugins/oshosts/host_plugin.py `reserve_resource`: kept as sent.
            reservation.update(
                hypervisor_properties=requested.get("hypervisor_properties", ""),
                resource_properties=requested["resource_properties"],
                before_end="default", on_start="default",
                min=int(requested["min"]), max=int(requested["max"]),
            )  # fmt: skip
        elif kind == "virtual:floatingip":
            # blazar/plugins/floatingips/floatingip_plugin.py; FloatingIPReservation.to_dict.
            reservation.update(
                network_id=requested["network_id"], amount=int(requested["amount"]),
                required_floatingips=[],
            )  # fmt: skip
        return reservation

    def start(self, lease_id: str, result: str = "ACTIVE") -> None:
        """The start_lease event (blazar/manager/service.py, decorated STARTING -> ACTIVE or
        ERROR). ACTIVE: each plugin's on_start has run."""
        with self._lock:
            lease = self.leases[lease_id]
            lease["status"] = result
            lease["events"][0]["status"] = "DONE" if result == "ACTIVE" else "ERROR"
            lease["updated_at"] = now().strftime(CREATED)
            if result != "ACTIVE":
                return
            for r in lease["reservations"]:
                r["status"] = "active"
                if r["resource_type"] == "flavor:instance":
                    self._create_reserved_flavor(lease, r)
                elif r["resource_type"] == "virtual:floatingip":
                    self._create_reserved_fips(r)

    def _create_reserved_flavor(self, lease: dict, reservation: dict) -> None:
        """flavor-A `_create_flavor`: a private flavor `reservation:<id>` whose id is the
        reservation id, the source's extra specs plus the reservation's; the project gets
        access at start (instances `on_start`: flavor_access.add_tenant_access)."""
        source = json.loads(reservation["resource_properties"])
        rid = reservation["id"]
        extra = dict(source.get("extra_specs") or {})
        extra["aggregate_instance_extra_specs:reservation"] = rid
        extra["resources:CUSTOM_RESERVATION_" + rid.upper().replace("-", "_")] = "1"
        self.reserved_flavors[rid] = nova_flavor(
            f"reservation:{rid}", rid, source["vcpus"], source["ram"], source["disk"],
            extra_specs=extra, **{"os-flavor-access:is_public": False},
        )  # fmt: skip

    def _create_reserved_fips(self, reservation: dict) -> None:
        """blazar/utils/openstack/neutron.py FloatingIPPool.create_reserved_floatingip: a plain
        Neutron floating IP of the project, tagged ["blazar", "reservation:<id>"], no
        description (Neutron's shape: neutron/db/l3_db.py `_make_floatingip_dict`)."""
        for _ in range(reservation["amount"]):
            self.fip_counter += 1
            self.floating_ips.append(self._fip(["blazar", f"reservation:{reservation['id']}"]))

    def _fip(self, tags: list[str], description: str = "") -> dict:
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {
            "id": str(uuid.uuid4()), "floating_ip_address": f"203.0.113.{self.fip_counter}",
            "floating_network_id": PUBLIC_NET, "router_id": None, "port_id": None,
            "fixed_ip_address": None, "status": "DOWN", "project_id": PROJECT_ID,
            "tenant_id": PROJECT_ID, "description": description, "port_details": None,
            "tags": tags, "created_at": stamp, "updated_at": stamp, "revision_number": 1,
        }  # fmt: skip

    def allocate_fip(self, stack: str) -> dict:
        """A floating IP allocated from `public` (what Terraform's floating IP resource asks)."""
        with self._lock:
            self.fip_counter += 1
            fip = self._fip([f"stack={stack}"], f"{stack}: the gateway of stack {stack}")
            self.floating_ips.append(fip)
            return fip

    def end(self, lease_id: str) -> None:
        """The lease's end (the end_lease event, or DELETE): every plugin's on_end. The
        instances on its reservations are deleted (instances `on_end`; host_plugin `on_end`),
        the reserved flavor deleted (instances `cleanup_resources`), the reserved floating IPs
        deleted (floatingip_plugin `on_end` -> deallocate); the lease reads TERMINATED."""
        with self._lock:
            lease = self.leases[lease_id]
            for r in lease["reservations"]:
                rid = r["id"]
                self.servers[:] = [s for s in self.servers if s.get("reservation") != rid]
                self.reserved_flavors.pop(rid, None)
                tag = f"reservation:{rid}"
                self.floating_ips[:] = [f for f in self.floating_ips if tag not in f["tags"]]
                r["status"] = "deleted"
            lease["status"] = "TERMINATED"
            lease["events"][1]["status"] = "DONE"
            lease["updated_at"] = now().strftime(CREATED)

    def delete(self, lease_id: str) -> None:
        """DELETE /leases/<id> (blazar/manager/service.py `delete_lease`): on_end for what is
        not over yet, then the lease is soft-deleted: a later GET answers 404."""
        with self._lock:
            if self.leases[lease_id]["status"] != "TERMINATED":
                self.end(lease_id)
            del self.leases[lease_id]

    def update(self, lease_id: str, values: dict) -> tuple[int, dict]:
        """PUT /leases/<id> (blazar/manager/service.py `update_lease`): each reservation's
        plugin `update_reservation`. flavor-A refuses a flavor reservation (409, NotImplemented,
        not among update_lease's non-fatal errors: the lease goes to ERROR); flavor-B moves its
        dates."""
        with self._lock:
            lease = self.leases[lease_id]
            if self.refuse_update:
                return 400, _error(400, self.refuse_update)
            flavors = [r for r in lease["reservations"] if r["resource_type"] == "flavor:instance"]
            if flavors and self.flavor_updates == "refuse":
                lease["status"] = "ERROR"
                return 409, _error(409, FLAVOR_UPDATE_REFUSED)
            end = datetime.strptime(values["end_date"], API_DATE)
            lease["end_date"] = end.strftime(LEASE_DATE)
            lease["events"][1]["time"] = lease["end_date"]
            lease["updated_at"] = now().strftime(CREATED)
            return 200, {"lease": lease}

    def lease_json(self, lease: dict) -> dict:
        """A lease as GET shows it, after Blazar's periodic event processing has run its start
        event once the start time has come (blazar/manager/service.py `_process_events`)."""
        starts = datetime.strptime(lease["start_date"], LEASE_DATE)
        if lease["status"] == "PENDING" and starts <= now() and self.start_as != "PENDING":
            self.start(lease["id"], self.start_as)
        return lease

    def add_host(self, node_type: str, booked: list[tuple[datetime, datetime]] = ()) -> dict:
        """A bare-metal host as GET /os-hosts lists it (blazar models.py ComputeHost with its
        extra capabilities flattened in, host_plugin.py `get_computehost`), and other projects'
        reservations of it."""
        host_id = str(len(self.hosts) + 1)
        uid = str(uuid.uuid4())
        host = {
            "id": host_id, "hypervisor_hostname": uid, "uid": uid, "node_type": node_type,
            "vcpus": 48, "memory_mb": 196608, "local_gb": 240, "cpu_info": "baremetal cpu",
            "hypervisor_type": "ironic", "hypervisor_version": 1, "service_name": uid,
            "status": None, "availability_zone": "", "trust_id": uuid.uuid4().hex,
            "reservable": True, "disabled": False,
            "created_at": now().strftime(CREATED), "updated_at": None,
        }  # fmt: skip
        self.hosts.append(host)
        self.booked[host_id] = [
            {"id": str(uuid.uuid4()), "lease_id": str(uuid.uuid4()),
             "start_date": start.strftime(LEASE_DATE), "end_date": end.strftime(LEASE_DATE),
             "extras": {}}
            for start, end in booked
        ]  # fmt: skip
        return host

    # --- Nova ------------------------------------------------------------------------------
    def visible_flavors(self) -> list[dict]:
        """What the project sees: public flavors, and the reserved ones it was given access
        to at a lease's start (nova/objects/flavor.py `_flavor_get_query_from_db`)."""
        return [*self.flavors.values(), *self.reserved_flavors.values()]

    def _flavor_by_id(self, flavor_id: str) -> dict:
        for flavor in self.visible_flavors():
            if flavor["id"] == flavor_id:
                return flavor
        raise KeyError(flavor_id)


def _error(code: int, message: str) -> dict:
    """blazar/api/v1/utils.py `render_error_message` (error_name is the integer code)."""
    return {"error_code": code, "error_message": message, "error_name": code}
