"""`CLOUD=chameleon`'s own work: the lease (python-chi), the hosts in it (Terraform on `infra/`
and `infra/volume/`), SSH to them with host keys pinned at first contact, the lease in
`make status` (its state, time left and cost), `make extend`, and the teardown at any point of
the lease's life with the list of what is left. Every step is recorded in the stack record and
safe to run again: a second `make up` after a failure continues with the same lease, never a
second one."""

from __future__ import annotations

from datetime import UTC, datetime

from core.errors import UserError
from stack import access
from stack.chameleon import availability, credentials, plan, settings, sites
from stack.chameleon import terraform as tf
from stack.chameleon.extend import FlavorExtendRefused, extend
from stack.chameleon.lease import Leases
from stack.chameleon.reservations import Lease, LeaseRequest
from stack.inventory import Host, Hosts
from stack.targets import NotReady, Target

WARN_HOURS = 2  # `make status` warns when less is left
STEPS = ("lease", "volume", "infra", "ssh", "configure", "health")


class ChameleonTarget(Target):
    cloud = "chameleon"
    remote = True
    backs_up_on_down = True  # the hosts' disks go with the hosts
    purge_deletes = (
        "the data volume (MLflow's databases, buckets, checkpoints, run records)",
        "the stack's secrets (SSH key, passwords, tokens)",
    )

    def keeps_folder_on_purge(self) -> bool:
        return True  # the lease's record, and the state of what may be left to remove

    def kept_after_down(self) -> str:
        site = settings.site(self.stack.record.site or None)
        if site.has_volumes:
            return (
                f"its lease is given back and its data volume {self.stack.name}-data kept (the "
                "next lease's hosts find it again; `make down PURGE=1` deletes it)"
            )
        return (
            "its lease is given back; bare metal keeps no data on the site, the backup in "
            f"{self.stack.display(self.stack.backups)} holds it (`make restore` on a new lease)"
        )

    def lost_without_backup(self) -> str:
        site = settings.site(self.stack.record.site or None)
        if site.has_volumes:
            return (
                "what is on the hosts' own disks (the data volume keeps the databases, buckets "
                "and run records)"
            )
        return (
            "every run, model, checkpoint and run record of the stack (bare metal has no data "
            "volume)"
        )

    # --- up ------------------------------------------------------------------------------
    def preflight(self, command: str) -> None:
        if command == "up":
            self.chosen = settings.for_up(self.stack.record.site or None)
            self.account = credentials.load(self.chosen.site.name)

    def _request(self) -> LeaseRequest:
        return LeaseRequest(
            name=self.stack.name,
            site=self.chosen.site,
            gpu_hardware=self.chosen.gpu_hardware,
            gpu_count=self.chosen.gpu_count,
            hours=self.chosen.lease_hours,
            start=self.chosen.start,
        )

    def plan(self) -> list[str]:
        request = self._request()
        slot = availability.next_free(Leases(self.account, self.chosen.site), request)
        return plan.up_lines(self.stack, self.chosen, self.account, request, slot)

    def planned_hosts(self) -> Hosts:
        gateway = access.Access(self.stack.folder, sites.SSH_USER, "<floating IP>")
        name = self.stack.name
        hosts = [Host(f"{name}-services", "<private address>", ("services", "ray_head"))]
        hosts += [
            Host(f"{name}-gpu-{n + 1}", f"<private address {n + 1}>", ("ray_workers",))
            for n in range(self.chosen.gpu_count)
        ]
        return Hosts(hosts, gateway, self._target_vars("<volume_id of infra/volume>"))

    def _target_vars(self, volume_id: str | None) -> dict:
        variables: dict = {"stack_ssh_allowed_cidrs": [self.chosen.ssh_allowed_cidr]}
        if volume_id and self.chosen.site.has_volumes:
            variables["stack_data_volume_id"] = volume_id
        return variables

    def make_hosts(self) -> Hosts:
        stack, chosen, account = self.stack, self.chosen, self.account
        stack.update(
            site=chosen.site.name,
            account=account.name,
            hardware=chosen.gpu_hardware,
            gpu_count=chosen.gpu_count,
        )
        lease = self._lease()
        env = credentials.terraform_env(account)
        log = stack.log_file("up")
        modules = tf.modules(stack.folder)
        volume_id = None
        if chosen.site.has_volumes:
            tf.write_tfvars(modules["volume"], tf.volume_variables(stack.name, account.name))
            tf.run(modules["volume"], "apply", env, log)
            volume_id = tf.output(modules["volume"], env).get("volume_id")
            stack.step_done("volume")
        public_key = access.ensure_key(stack.folder)
        variables = tf.infra_variables(
            stack.name, chosen, account.name, lease, public_key, volume_id
        )
        tf.write_tfvars(modules["infra"], variables)
        tf.run(modules["infra"], "apply", env, log)
        outputs = tf.output(modules["infra"], env)
        stack.step_done("infra")

        way_in = access.Access(
            stack.folder, outputs.get("ssh_user") or sites.SSH_USER, outputs["gateway_address"]
        )
        if stack.record.lease.pinned_for != lease.id:
            # New lease, new instances, new host keys (and floating IPs are recycled).
            way_in.known_hosts.unlink(missing_ok=True)
            stack.update_lease(pinned_for=lease.id)
        hosts = tf.hosts(outputs)
        workers = [h.address for h in hosts if "ray_workers" in h.groups]
        self.console.print(f"waiting for SSH on {way_in.gateway} and {len(workers)} GPU host(s)")
        access.wait_for_ssh(way_in, workers, chosen.ssh_timeout)
        stack.step_done("ssh")
        self.lease = lease
        return Hosts(hosts, way_in, self._target_vars(volume_id))

    def _lease(self) -> Lease:
        """The stack's lease, found again or made, once it is ACTIVE."""
        stack, chosen = self.stack, self.chosen
        leases = Leases(self.account, chosen.site)
        request = self._request()
        self.console.print(f"lease {request.name!r} at {chosen.site.name}: finding or making it")
        known = stack.record.lease

        def remember(lease_id: str) -> None:
            if lease_id != stack.record.lease.id:
                stack.update_lease(id=lease_id, name=request.name, extend_refused=False)

        try:
            lease, created = leases.ensure(
                request, known.id or None, remember, chosen.lease_timeout, known.extend_refused
            )
        except UserError as exc:
            if "went to ERROR" in str(exc):  # deleted by Leases.wait_active
                stack.update_lease(id="", status="", end="")
            raise
        stack.update_lease(
            status=lease.status,
            start=lease.start.isoformat(),
            end=lease.end.isoformat(),
            hours=request.hours,
        )
        if lease.status == "PENDING":
            raise NotReady(
                f"lease {lease.name!r} ({lease.id}) {'made' if created else 'is reserved'}: it "
                f"starts {lease.start:%Y-%m-%d %H:%M} UTC and ends {lease.end:%Y-%m-%d %H:%M} "
                "UTC; run `make up` again after it starts to make and configure the hosts "
                "(`make down` gives the reservation back)"
            )
        if chosen.site.reserves_floating_ip and not lease.floating_ip:
            raise UserError(
                f"lease {lease.name!r} is ACTIVE but its reserved floating IP is not listed "
                "yet; `make up` again in a minute"
            )
        stack.step_done("lease")
        where = f", floating IP {lease.floating_ip}" if lease.floating_ip else ""
        self.console.print(
            f"lease {lease.name!r} ({lease.id}) {'made' if created else 'reused'}: {lease.status}"
            f" until {lease.end:%Y-%m-%d %H:%M} UTC{where}"
        )
        return lease

    def after_up(self) -> list[str]:
        lease = self.lease
        return [
            f"stack [bold]{self.stack.name}[/] is up at {self.chosen.site.name}; lease ends "
            f"{lease.end:%Y-%m-%d %H:%M} UTC ({lease.hours_left():.1f} h left)\n"
            "`make tunnel` opens MLflow, Ray's dashboard and the object store on this "
            "machine (for the UIs; `make train` reaches them by itself); `make status` shows "
            "the lease"
        ]

    # --- status, extend --------------------------------------------------------------------
    def _leases(self) -> Leases:
        site = settings.site(self.stack.record.site or None)
        return Leases(credentials.load(site.name), site)

    def _current(self) -> tuple[Leases, dict | None]:
        """Blazar's answer for the stack's lease (None: it is gone)."""
        leases = self._leases()
        lease_id = self.stack.record.lease.id
        return leases, (leases.get(lease_id) if lease_id else None)

    def _request_from_record(self, site: sites.Site) -> LeaseRequest:
        record = self.stack.record
        return LeaseRequest(
            self.stack.name, site, record.hardware, record.gpu_count,
            record.lease.hours or settings.DEFAULT_LEASE_HOURS,
        )  # fmt: skip

    def running(self) -> bool:
        """The hosts exist: the lease is ACTIVE (or reads ERROR only because Blazar refused
        to prolong it, its instances running until its end)."""
        if not self.stack.record.lease.id:
            return False
        _, raw = self._current()
        usable = ("ACTIVE", "ERROR") if self.stack.record.lease.extend_refused else ("ACTIVE",)
        return raw is not None and raw["status"] in usable

    def status_section(self, nodes: list[dict] | None) -> None:
        record = self.stack.record
        done = [step for step in STEPS if step in record.steps]
        self.console.print(f"steps done: {', '.join(done) or 'none'}")
        if not record.lease.id:
            self.console.print("no lease: `make up` makes one")
            return
        leases, raw = self._current()
        if raw is None:
            self.console.print(
                f"lease {record.lease.id} is gone (ended or deleted): its instances are gone "
                "too; `make down` removes what is left of the stack"
            )
            return
        lease = leases.describe(raw, self._request_from_record(leases.site))
        now = datetime.now(UTC)
        left = lease.hours_left(now)
        started = lease.start <= now
        when = (
            f"{max(left, 0):.1f} h left (started {lease.start:%Y-%m-%d %H:%M} UTC)"
            if started
            else f"starts {lease.start:%Y-%m-%d %H:%M} UTC"
        )
        self.console.print(
            f"lease {lease.name!r} ({lease.id}): {lease.status}, ends "
            f"{lease.end:%Y-%m-%d %H:%M} UTC, {when}"
        )
        for line in plan.cost_lines(lease, leases.site, record.hardware, now):
            self.console.print(line)
        if lease.status == "ERROR" and record.lease.extend_refused:
            self.console.print(
                "Blazar lists the lease as ERROR since it refused to prolong it; its instances "
                "run until its end"
            )
        elif lease.status == "ERROR":
            self.console.print(
                "[bold red]the lease is in ERROR[/]: Blazar could not start or keep it; "
                "`make down` deletes it and what is left of the stack"
            )
        elif lease.status == "ACTIVE" and left < WARN_HOURS:
            self.console.print(
                f"[bold red]warning[/]: under {WARN_HOURS} h left; the lease's end deletes "
                f"every instance: `make extend HOURS={settings.DEFAULT_EXTEND_HOURS}` "
                "prolongs it"
            )
        if record.is_up:
            urls = ", ".join(f"{name} {url}" for name, url in access.local_urls().items())
            self.console.print(f"through `make tunnel`: {urls}")

    def extend(self) -> None:
        leases, raw = self._current()
        if raw is None:
            raise UserError(
                f"stack {self.stack.name!r} has no lease to extend (`make status` says why)"
            )
        lease = leases.describe(raw, self._request_from_record(leases.site))
        hours = settings.extend_hours(leases.site)
        try:
            new_end = extend(leases, lease, hours)
        except FlavorExtendRefused:
            self.stack.update_lease(extend_refused=True)
            raise
        self.stack.update_lease(end=new_end.isoformat())
        self.console.print(
            f"lease {lease.name!r} extended by {hours} h: ends {new_end:%Y-%m-%d %H:%M} UTC "
            f"(was {lease.end:%Y-%m-%d %H:%M} UTC)"
        )

    # --- down ----------------------------------------------------------------------------
    def down_plan(self, purge: bool) -> list[str]:
        site = settings.site(self.stack.record.site or None)
        return plan.down_lines(self.stack, site, purge)

    def tear_down(self, purge: bool) -> None:
        """Whatever the lease's state: before it starts, ACTIVE, ended, deleted by hand, or
        after an interrupted `make up`. Once its instances, reserved flavor and floating IP are
        gone, Terraform is told so, and reads nothing that vanished."""
        stack = self.stack
        leases, raw = self._current()
        found = raw or leases.find(stack.name)
        active = found is not None and (
            found["status"] == "ACTIVE"
            or (found["status"] == "ERROR" and stack.record.lease.extend_refused)
        )
        account = leases.cloud
        env = credentials.terraform_env(account)
        log = stack.log_file("down")
        modules = tf.modules(stack.folder)
        if modules["infra"].has_state():
            tf.destroy(modules["infra"], env, log, reservations_active=active)
        stack.step_done("destroyed")
        if found is not None:
            leases.delete(found["id"])
            self.console.print(f"lease {found['name']!r} ({found['id']}) deleted")
            self._report_cost(leases, found)
        stack.update_lease(id="", pinned_for="", end="", status="", extend_refused=False)
        if purge and modules["volume"].has_state():
            tf.destroy(modules["volume"], env, log)
        access.Access(stack.folder, sites.SSH_USER, "").known_hosts.unlink(missing_ok=True)
        plan.report_leftovers(self.console, stack, account, leases.site, keep_volume=not purge)

    def _report_cost(self, leases: Leases, raw: dict) -> None:
        try:
            lease = leases.describe(raw, self._request_from_record(leases.site))
        except UserError:
            return  # not a lease of the stack's shape: nothing to add up
        now = datetime.now(UTC)
        for line in plan.cost_lines(
            lease, leases.site, self.stack.record.hardware, now, deleted=True
        ):
            self.console.print(line)


TARGET = ChameleonTarget
