"""`CLOUD=chameleon`'s own work: the lease (python-chi), the hosts in it (Terraform on `infra/`
and `infra/volume/`), SSH to them with host keys pinned at first contact, the lease in
`make status`, `make extend`, and the teardown with the list of what is left. Every step is
recorded in the stack record and safe to run again: a second `make up` after a failure
continues with the same lease, never a second one."""

from __future__ import annotations

from core.errors import UserError
from stack import access
from stack.chameleon import credentials, plan, settings, sites
from stack.chameleon import terraform as tf
from stack.chameleon.lease import Lease, LeaseRequest, Leases
from stack.inventory import Host, Hosts
from stack.targets import Target

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
        )

    def plan(self) -> list[str]:
        return plan.up_lines(self.stack, self.chosen, self.account, self._request())

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
        log = stack.log_file("up")
        leases = Leases(account, chosen.site)
        request = self._request()
        self.console.print(f"lease {request.name!r} at {chosen.site.name}: finding or making it")
        known = stack.record.lease

        def remember(lease_id: str) -> None:
            stack.update_lease(id=lease_id, name=request.name)

        lease, created = leases.ensure(request, known.id or None, remember, chosen.lease_timeout)
        if not lease.floating_ip:
            raise UserError(
                f"lease {lease.name!r} is ACTIVE but its reserved floating IP is not listed "
                "yet; `make up` again in a minute"
            )
        # When the lease ends, for whoever plans work on the stack (training checks time left).
        stack.update_lease(
            status=lease.status,
            start=lease.start.isoformat(),
            end=lease.end.isoformat(),
            hours=request.hours,
        )
        stack.step_done("lease")
        self.console.print(
            f"lease {lease.name!r} ({lease.id}) {'made' if created else 'reused'}: ACTIVE until "
            f"{lease.end:%Y-%m-%d %H:%M} UTC, floating IP {lease.floating_ip}"
        )
        env = credentials.terraform_env(account)
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
        hosts = _hosts(outputs)
        workers = [h.address for h in hosts if "ray_workers" in h.groups]
        self.console.print(f"waiting for SSH on {way_in.gateway} and {len(workers)} GPU host(s)")
        access.wait_for_ssh(way_in, workers, chosen.ssh_timeout)
        stack.step_done("ssh")
        self.lease = lease
        return Hosts(hosts, way_in, self._target_vars(volume_id))

    def after_up(self) -> list[str]:
        lease = self.lease
        return [
            f"stack [bold]{self.stack.name}[/] is up at {self.chosen.site.name}; lease ends "
            f"{lease.end:%Y-%m-%d %H:%M} UTC ({lease.hours_left():.1f} h left)\n"
            "`make tunnel` opens MLflow, Ray's dashboard and the object store on this "
            "machine; `make status` shows the lease"
        ]

    # --- status, extend --------------------------------------------------------------------
    def running(self) -> bool:
        return bool(self.stack.record.lease.id)

    def _current_lease(self) -> tuple[Leases, Lease]:
        record = self.stack.record
        if not record.lease.id:
            raise UserError(
                f"stack {self.stack.name!r} has no lease; `make up CLOUD=chameleon` makes one"
            )
        site = settings.site(record.site or None)
        leases = Leases(credentials.load(site.name), site)
        raw = leases.get(record.lease.id)
        if raw is None:
            raise UserError(
                f"the lease of stack {self.stack.name!r} is gone; `make up` makes a new one"
            )
        request = LeaseRequest(
            self.stack.name, site, record.hardware, record.gpu_count,
            record.lease.hours or settings.DEFAULT_LEASE_HOURS,
        )  # fmt: skip
        return leases, leases.describe(raw, request)

    def status_section(self, nodes: list[dict] | None) -> None:
        record = self.stack.record
        done = [step for step in STEPS if step in record.steps]
        self.console.print(f"steps done: {', '.join(done) or 'none'}")
        if not record.lease.id:
            self.console.print("no lease: `make up` makes one")
            return
        _, lease = self._current_lease()
        left = lease.hours_left()
        self.console.print(
            f"lease {lease.name!r} ({lease.id}): {lease.status}, ends "
            f"{lease.end:%Y-%m-%d %H:%M} UTC, {max(left, 0):.1f} h left"
        )
        if left < WARN_HOURS:
            self.console.print(
                f"[bold red]warning[/]: under {WARN_HOURS} h left; the lease's end deletes "
                f"every instance: `make extend HOURS={settings.DEFAULT_EXTEND_HOURS}` "
                "prolongs it"
            )
        if record.is_up:
            urls = ", ".join(f"{name} {url}" for name, url in access.local_urls().items())
            self.console.print(f"through `make tunnel`: {urls}")

    def extend(self) -> None:
        leases, lease = self._current_lease()
        hours = settings.extend_hours(leases.site)
        new_end = leases.extend(lease, hours)
        self.stack.update_lease(end=new_end.isoformat())
        self.console.print(
            f"lease {lease.name!r} extended by {hours} h: ends {new_end:%Y-%m-%d %H:%M} UTC "
            f"(was {lease.end:%Y-%m-%d %H:%M} UTC)"
        )

    # --- down ----------------------------------------------------------------------------
    def _site_and_account(self) -> tuple[sites.Site, credentials.Cloud]:
        site = settings.site(self.stack.record.site or None)
        return site, credentials.load(site.name)

    def down_plan(self, purge: bool) -> list[str]:
        site, _ = self._site_and_account()
        return plan.down_lines(self.stack, site, purge)

    def tear_down(self, purge: bool) -> None:
        stack = self.stack
        site, account = self._site_and_account()
        env = credentials.terraform_env(account)
        log = stack.log_file("down")
        modules = tf.modules(stack.folder)
        if modules["infra"].has_state():
            tf.run(modules["infra"], "destroy", env, log)
        stack.step_done("destroyed")
        leases = Leases(account, site)
        found = leases.find(stack.name, stack.record.lease.id or None)
        if found:
            leases.delete(found["id"])
            self.console.print(f"lease {found['name']!r} ({found['id']}) deleted")
        stack.update_lease(id="", pinned_for="", end="")
        if purge and modules["volume"].has_state():
            tf.run(modules["volume"], "destroy", env, log)
        access.Access(stack.folder, sites.SSH_USER, "").known_hosts.unlink(missing_ok=True)
        plan.report_leftovers(self.console, stack, account, site, keep_volume=not purge)


def _hosts(outputs: dict) -> list[Host]:
    """The hosts Terraform made (its `hosts` output), for the inventory."""
    hosts = outputs.get("hosts") or {}
    services = [name for name, h in hosts.items() if h.get("role") == "services"]
    if len(services) != 1:
        raise UserError(
            f"terraform output `hosts` names {len(services)} services host(s), not one; "
            "see infra/outputs.tf"
        )
    (gateway,) = services
    made = [Host(gateway, hosts[gateway]["private_address"], ("services", "ray_head"))]
    made += [
        Host(name, h["private_address"], ("ray_workers",))
        for name, h in sorted(hosts.items())
        if name != gateway
    ]
    return made


TARGET = ChameleonTarget
