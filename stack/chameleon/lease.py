"""The stack's lease, through python-chi's `Lease` class and its Blazar client.

One lease per stack, named after it: GPU nodes (a `flavor:instance` reservation on KVM, a
`physical:host` one on bare metal), one services node and, on bare metal, one floating IP.
Found again by id or by name so that a second `make up` never makes a second lease; Blazar's
answer is read as `reservations` says. A lease in ERROR is never reused: one that goes to
ERROR while `make up` waits is deleted before `make up` ends (python-chi's `wait()` returns
quietly on ERROR, so the status is checked after every wait)."""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

from core.errors import UserError
from stack.chameleon.credentials import Cloud, python_chi
from stack.chameleon.reservations import (
    GOING,
    REUSABLE,
    Lease,
    LeaseRequest,
    made_for,
    parse_date,
)
from stack.chameleon.sites import Site


class Leases:
    """Blazar, Nova and Neutron as python-chi reaches them, for one site and credential."""

    def __init__(self, cloud: Cloud, site: Site) -> None:
        self.cloud, self.site = cloud, site

    @contextlib.contextmanager
    def _chi(self) -> Iterator[object]:
        # python-chi prints progress to stdout and logs Blazar's refusals: keep both for
        # our own one-line messages.
        from blazarclient.exception import BlazarClientException

        with python_chi(self.cloud) as chi, contextlib.redirect_stdout(io.StringIO()):
            try:
                yield chi
            except BlazarClientException as err:
                raise UserError(f"Blazar at {self.site.name}: {message(err)}") from None

    # --- finding -----------------------------------------------------------------------
    def get(self, lease_id: str) -> dict | None:
        from blazarclient.exception import BlazarClientException

        with self._chi() as chi:
            try:
                return chi.blazar().lease.get(lease_id)
            except BlazarClientException as err:
                if err.kwargs.get("code") == 404:
                    return None
                raise UserError(f"Blazar at {self.site.name}: {message(err)}") from None

    def find(self, name: str, lease_id: str | None = None) -> dict | None:
        """The stack's lease: by the id remembered from an earlier `up`, else by name among
        this user's leases (another user of the project may hold a lease of that name)."""
        if lease_id and (found := self.get(lease_id)):
            return found
        with self._chi() as chi:
            mine = chi.session().get_user_id()
            named = [lease for lease in chi.blazar().lease.list() if lease["name"] == name]
        if named and not [lease for lease in named if lease.get("user_id") == mine]:
            raise UserError(
                f"a lease named {name!r} belongs to another user of this project; "
                "pick another STACK_NAME="
            )
        named = [lease for lease in named if lease.get("user_id") == mine]
        # Ended leases linger in Blazar's list: a live one of the name wins over them.
        live = [lease for lease in named if lease["status"] != "TERMINATED"]
        if len(live) > 1:
            ids = ", ".join(lease["id"] for lease in live)
            raise UserError(f"{len(live)} leases are named {name!r} ({ids}); delete all but one")
        return (live or named or [None])[0]

    # --- making ------------------------------------------------------------------------
    def ensure(
        self,
        request: LeaseRequest,
        known_id: str | None,
        remember: Callable[[str], None],
        timeout: float,
        usable_error: bool = False,
    ) -> tuple[Lease, bool]:
        """Reuse the stack's lease or create it, then wait until ACTIVE (unless it starts
        later); returns it and whether it was created now. `remember(id)` is called as soon as
        the id is known. `usable_error`: the lease reads ERROR only because Blazar refused to
        extend it, and its instances run until its end."""
        found = self.find(request.name, known_id)
        if found and found["status"] == "TERMINATED":
            # It ended and holds nothing; its name is the stack's, so make room.
            self.delete(found["id"])
            found = None
        created = found is None
        if found:
            if not (usable_error and found["status"] == "ERROR"):
                self._check_reusable(found, request)
            lease_id = found["id"]
        else:
            lease_id = self._create(request)
        remember(lease_id)
        raw = self.get(lease_id) or {}
        if raw.get("status") == "PENDING" and parse_date(raw["start_date"]) > _now():
            return self.describe(raw, request), created  # an advance reservation: not yet
        if usable_error and raw.get("status") == "ERROR":
            return self.describe(raw, request), created
        return self.wait_active(lease_id, request, timeout), created

    def _check_reusable(self, found: dict, request: LeaseRequest) -> None:
        status = found["status"]
        where = f"lease {found['name']!r} ({found['id']}) at {self.site.name}"
        if status == "ERROR":
            raise UserError(
                f"{where} is in ERROR: Blazar could not start it and it is never reused; "
                "`make down` deletes it"
            )
        if status in GOING:
            raise UserError(f"{where} is {status.lower()}; run `make up` again once it is gone")
        if status not in REUSABLE:
            raise UserError(f"{where} is {status}, which `make up` cannot use; `make down`")
        gpu = self._reservations(found, request)[0]
        amount = int(gpu.get("amount") or gpu.get("max") or 0)
        if amount != request.gpu_count:
            raise UserError(
                f"{where} holds {amount} GPU node(s), GPU_NODES={request.gpu_count} asks for "
                f"{request.gpu_count}; `make down` and `make up` again, or GPU_NODES={amount}"
            )

    def _create(self, request: LeaseRequest) -> str:
        from chi.exception import CHIValueError, ResourceError

        refusals = _Collect()
        logging.getLogger("chi").addHandler(refusals)
        try:
            with self._chi():
                import chi.lease as chi_lease  # imports pandas/IPython: only when contacting

                start = request.start
                end = (start or datetime.now(UTC)) + timedelta(hours=request.hours)
                lease = chi_lease.Lease(request.name, start_date=start, end_date=end)
                if self.site.kind == "kvm":
                    lease.add_flavor_reservation(
                        name=request.gpu_hardware, amount=request.gpu_count
                    )
                    lease.add_flavor_reservation(name=self.site.services, amount=1)
                else:
                    lease.add_node_reservation(
                        amount=request.gpu_count, node_type=request.gpu_hardware
                    )
                    lease.add_node_reservation(amount=1, node_type=self.site.services)
                if self.site.reserves_floating_ip:
                    lease.add_fip_reservation(amount=1)
                lease.submit(wait_for_active=False)
                return lease.id
        except (ResourceError, CHIValueError) as err:
            # python-chi logs Blazar's words lower-cased, as "error: <message>".
            why = refusals.messages[-1] if refusals.messages else str(err)
            why = why.removeprefix("error: ")
            raise UserError(f"Blazar at {self.site.name} did not make the lease: {why}") from None
        finally:
            logging.getLogger("chi").removeHandler(refusals)

    def wait_active(self, lease_id: str, request: LeaseRequest, timeout: float) -> Lease:
        """Wait until the lease is ACTIVE. One that goes to ERROR holds nothing usable and
        keeps nothing running: it is deleted here, and the error says so."""
        from chi.exception import ServiceError

        with self._chi() as chi:
            import chi.lease as chi_lease

            lease = chi_lease.Lease(lease_json=chi.blazar().lease.get(lease_id))
            try:
                lease.wait(status="active", timeout=timeout)
            except ServiceError:
                raise UserError(
                    f"lease {request.name!r} ({lease_id}) is still {lease.status} after "
                    f"{timeout:.0f} s; `make up` again waits for the same lease, `make down` "
                    "deletes it"
                ) from None
            raw = chi.blazar().lease.get(lease_id)
        if raw["status"] == "ERROR":
            self.delete(lease_id)
            raise UserError(
                f"lease {request.name!r} ({lease_id}) went to ERROR at {self.site.name} (Blazar "
                "could not start it); it was deleted, so nothing is left or charged. The "
                "hardware may be taken: `make up DRY_RUN=1` says when it is next free"
            )
        if raw["status"] != "ACTIVE":
            self._check_reusable(raw, request)
        return self.describe(raw, request)

    # --- reading -----------------------------------------------------------------------
    def _reservations(self, raw: dict, request: LeaseRequest) -> tuple[dict, dict, dict | None]:
        """The GPU, services and floating-IP reservations of a lease, told apart by what they
        were made for: the requested flavor, kept as JSON in a flavor reservation's
        `resource_properties` (blazar@5204b41a flavor_plugin.py `reserve_resource`), or the
        node type in a host reservation's."""
        reservations = raw.get("reservations") or []
        fips = [r for r in reservations if r.get("resource_type") == "virtual:floatingip"]
        kind = self.site.reservation_kind
        hosts = [r for r in reservations if r.get("resource_type") == kind]
        gpus = [r for r in hosts if made_for(r, self.site) == request.gpu_hardware]
        others = [r for r in hosts if r not in gpus]
        wanted_fips = 1 if self.site.reserves_floating_ip else 0
        if len(gpus) != 1 or len(others) != 1 or len(fips) != wanted_fips:
            fip = " and one floating IP" if wanted_fips else ""
            raise UserError(
                f"lease {raw['name']!r} ({raw['id']}) is not one this stack made (it wants one "
                f"{request.gpu_hardware} reservation and one services node{fip}); pick "
                "another STACK_NAME= or delete it"
            )
        return gpus[0], others[0], (fips[0] if fips else None)

    def describe(self, raw: dict, request: LeaseRequest) -> Lease:
        gpu, services, fip = self._reservations(raw, request)
        address = ""
        if fip is not None and raw["status"] in ("ACTIVE", "ERROR"):
            # Blazar creates the reserved floating IP at lease start, tagged
            # ["blazar", "reservation:<id>"] (blazar@bbd20e84 blazar/utils/openstack/neutron.py
            # FloatingIPPool.create_reserved_floatingip), as python-chi's
            # Lease.get_reserved_floating_ips reads it.
            with self._chi() as chi:
                tag = f"reservation:{fip['id']}"
                found = [
                    f["floating_ip_address"]
                    for f in chi.neutron().list_floatingips()["floatingips"]
                    if tag in f.get("tags", [])
                ]
            address = found[0] if found else ""
        return Lease(
            id=raw["id"],
            name=raw["name"],
            status=raw["status"],
            start=parse_date(raw["start_date"]),
            end=parse_date(raw["end_date"]),
            gpu_reservation_id=gpu["id"],
            services_reservation_id=services["id"],
            fip_reservation_id=fip["id"] if fip else "",
            floating_ip=address,
            gpu_count=int(gpu.get("amount") or gpu.get("max") or 0),
        )

    # --- changing ----------------------------------------------------------------------
    def delete(self, lease_id: str) -> bool:
        """Delete the lease; False when it was already gone."""
        from blazarclient.exception import BlazarClientException

        with self._chi() as chi:
            try:
                chi.blazar().lease.delete(lease_id)
            except BlazarClientException as err:
                if err.kwargs.get("code") == 404:
                    return False
                raise UserError(
                    f"Blazar would not delete lease {lease_id}: {message(err)}"
                ) from None
        return True


def _now() -> datetime:
    return datetime.now(UTC)


def message(err: Exception) -> str:
    """Blazar's own words: blazarclient wraps them as 'ERROR: <error_message>'."""
    text = str(err)
    return text.removeprefix("ERROR: ").strip() or type(err).__name__


class _Collect(logging.Handler):
    """python-chi logs Blazar's reason for refusing a lease, then raises a generic error."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
