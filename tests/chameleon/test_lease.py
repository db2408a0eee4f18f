"""The lease logic, with python-chi's real code running against the Chameleon API stand-in
(tests/chameleon/standin.py) at its HTTP boundary."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta

import pytest

from core.errors import UserError
from stack.chameleon import credentials, sites
from stack.chameleon.extend import FlavorExtendRefused, extend
from stack.chameleon.lease import Leases
from stack.chameleon.reservations import LeaseRequest, parse_date
from tests.chameleon.conftest import clouds_yaml
from tests.chameleon.standin import FLAVORS, OTHER_USER_ID, PUBLIC_NET

KVM = sites.site("KVM@TACC")
UC = sites.site("CHI@UC")
LEASES = r"/reservation/v1/leases"


def kvm_request(gpus: int = 1) -> LeaseRequest:
    return LeaseRequest("mystack", KVM, "g1.h100.pci.1", gpus, 8)


def leases_for(site: sites.Site) -> Leases:
    return Leases(credentials.load(site.name), site)


def ensure(leases: Leases, request: LeaseRequest, known: str | None = None, timeout=30):
    remembered: list[str] = []
    lease, created = leases.ensure(request, known, remembered.append, timeout)
    return lease, created, remembered


def flavor_id(name: str) -> str:
    return FLAVORS[name][0]


def kvm_reservations(gpus: int = 1) -> list[dict]:
    """What python-chi sends for the stack's KVM lease (chi/lease.py add_flavor_reservation)."""
    return [
        {"resource_type": "flavor:instance", "flavor_id": flavor_id("g1.h100.pci.1"),
         "amount": gpus, "affinity": None},
        {"resource_type": "flavor:instance", "flavor_id": flavor_id("m1.xlarge"), "amount": 1,
         "affinity": None},
    ]  # fmt: skip


def test_create_reserves_gpus_and_services_by_flavor(standin, cloud_env):
    lease, created, remembered = ensure(leases_for(KVM), kvm_request(gpus=2))

    assert created and remembered == [lease.id]
    assert standin.count("POST", LEASES) == 1
    (body,) = [b for m, p, b in standin.bodies if m == "POST" and p.endswith("/leases")]
    assert body["name"] == "mystack" and body["start_date"] == "now"
    end = datetime.strptime(body["end_date"], "%Y-%m-%d %H:%M").replace(tzinfo=UTC)
    assert timedelta(hours=7, minutes=58) < end - datetime.now(UTC) <= timedelta(hours=8)
    kinds = sorted(
        (r["resource_type"], r.get("flavor_id"), r["amount"]) for r in body["reservations"]
    )
    # KVM@TACC documents no floating-IP reservations: infra/ allocates one from `public`.
    assert kinds == sorted([
        ("flavor:instance", flavor_id("g1.h100.pci.1"), 2),
        ("flavor:instance", flavor_id("m1.xlarge"), 1),
    ])  # fmt: skip
    stored = standin.leases[lease.id]
    by_id = {r["id"]: r for r in stored["reservations"]}
    # Blazar answers with the reserved flavor's id (the reservation id) in flavor_id and the
    # requested flavor in resource_properties: the reservations are told apart by the latter.
    gpu, services = by_id[lease.gpu_reservation_id], by_id[lease.services_reservation_id]
    assert gpu["flavor_id"] == gpu["id"] and services["flavor_id"] == services["id"]
    assert json.loads(gpu["resource_properties"])["id"] == flavor_id("g1.h100.pci.1")
    assert json.loads(services["resource_properties"])["name"] == "m1.xlarge"
    # Terraform gets the reservations' ids, never the lease's.
    assert lease.id not in (lease.gpu_reservation_id, lease.services_reservation_id)
    assert lease.status == "ACTIVE" and lease.gpu_count == 2
    assert lease.floating_ip == "" and not standin.floating_ips
    assert lease.end == parse_date(stored["end_date"])
    # At its start the lease's reserved flavors became visible to the project.
    names = {f["name"] for f in standin.visible_flavors()}
    assert {f"reservation:{gpu['id']}", f"reservation:{services['id']}"} <= names
    # python-chi read the OS_* variables; they are gone again, so no child process sees them.
    assert not [key for key in os.environ if key.startswith("OS_APPLICATION_CREDENTIAL")]
    assert os.environ.get("OS_AUTH_URL") is None


def test_bare_metal_reserves_nodes_by_type(standin, cloud_env):
    clouds_yaml(cloud_env, standin.url, region="CHI@UC")
    standin.region = "CHI@UC"
    request = LeaseRequest("mystack", UC, "gpu_a100_pcie", 2, 8)
    lease, created, _ = ensure(leases_for(UC), request)

    (body,) = [b for m, p, b in standin.bodies if m == "POST" and p.endswith("/leases")]
    hosts = [r for r in body["reservations"] if r["resource_type"] == "physical:host"]
    wanted = {
        (json.dumps(["==", "$node_type", "gpu_a100_pcie"]), 2),
        (json.dumps(["==", "$node_type", "compute_cascadelake_r"]), 1),
    }
    assert {(r["resource_properties"], r["min"]) for r in hosts} == wanted
    assert all(r["min"] == r["max"] for r in hosts)
    gpu = next(r for r in standin.leases[lease.id]["reservations"]
               if r["id"] == lease.gpu_reservation_id)  # fmt: skip
    assert "gpu_a100_pcie" in gpu["resource_properties"]


def test_reuses_the_stacks_lease_by_name(standin, cloud_env):
    existing = standin.add_lease("mystack", "ACTIVE", reservations=kvm_reservations())
    standin.add_lease("someone-elses", "ACTIVE", reservations=kvm_reservations())

    lease, created, remembered = ensure(leases_for(KVM), kvm_request())

    assert not created and lease.id == existing["id"] and remembered == [existing["id"]]
    assert standin.count("POST", LEASES) == 0


def test_reuses_the_remembered_lease_by_id(standin, cloud_env):
    existing = standin.add_lease("mystack", "ACTIVE", reservations=kvm_reservations())
    lease, created, _ = ensure(leases_for(KVM), kvm_request(), known=existing["id"])
    assert not created and lease.id == existing["id"]
    assert standin.count("GET", LEASES) == 0  # found by id, no listing needed


def test_another_users_lease_of_that_name_is_not_taken(standin, cloud_env):
    standin.add_lease("mystack", "ACTIVE", user_id=OTHER_USER_ID, reservations=kvm_reservations())
    with pytest.raises(UserError, match="belongs to another user of this project"):
        ensure(leases_for(KVM), kvm_request())
    assert standin.count("POST", LEASES) == 0


def test_a_lease_in_error_is_reported_and_not_reused(standin, cloud_env):
    broken = standin.add_lease("mystack", "ERROR", reservations=kvm_reservations())
    with pytest.raises(UserError, match=r"is in ERROR.*never reused.*`make down` deletes it"):
        ensure(leases_for(KVM), kvm_request())
    assert standin.count("POST", LEASES) == 0
    assert broken["id"] in standin.leases


def test_a_new_lease_that_goes_to_error_is_reported_and_deleted(standin, cloud_env):
    # python-chi's wait() returns quietly on ERROR: the status must be checked after it. A
    # lease in ERROR holds nothing usable: it is deleted before `make up` ends.
    standin.start_as = "ERROR"
    with pytest.raises(UserError, match="went to ERROR.*it was deleted, so nothing is left"):
        ensure(leases_for(KVM), kvm_request())
    assert standin.count("POST", LEASES) == 1 and not standin.leases


def test_waiting_times_out_with_the_lease_remembered(standin, cloud_env):
    standin.start_as = "PENDING"
    remembered: list[str] = []
    with pytest.raises(UserError, match=r"still PENDING after 1 s.*the same lease"):
        leases_for(KVM).ensure(kvm_request(), None, remembered.append, timeout=1)
    assert remembered == list(standin.leases)  # the next `make up` waits on this one

    standin.start_as = "ACTIVE"
    lease, created, _ = ensure(leases_for(KVM), kvm_request(), known=remembered[0])
    assert not created and lease.id == remembered[0] and lease.status == "ACTIVE"
    assert standin.count("POST", LEASES) == 1


def test_a_different_gpu_count_is_not_silently_reused(standin, cloud_env):
    standin.add_lease("mystack", "ACTIVE", reservations=kvm_reservations(gpus=1))
    with pytest.raises(UserError, match="holds 1 GPU node.*GPU_NODES=3"):
        ensure(leases_for(KVM), kvm_request(gpus=3))


def test_an_ended_lease_is_replaced(standin, cloud_env):
    ended = standin.add_lease("mystack", "TERMINATED", reservations=kvm_reservations())
    lease, created, _ = ensure(leases_for(KVM), kvm_request())
    assert created and lease.id != ended["id"] and ended["id"] not in standin.leases


def test_a_live_lease_wins_over_an_ended_one_of_the_same_name(standin, cloud_env):
    standin.add_lease("mystack", "TERMINATED", reservations=kvm_reservations())
    live = standin.add_lease("mystack", "ACTIVE", reservations=kvm_reservations())
    lease, created, _ = ensure(leases_for(KVM), kvm_request())
    assert not created and lease.id == live["id"]
    assert standin.count("POST", LEASES) == 0


def test_blazar_refusing_the_lease_says_why(standin, cloud_env):
    standin.refuse_create = "Not enough resources available with query {'flavor': 'g1.h100'}"
    with pytest.raises(UserError, match="did not make the lease: .*not enough resources available"):
        ensure(leases_for(KVM), kvm_request())


def active(standin, hours: float, site_reservations=None, start=None):
    raw = standin.add_lease("mystack", "ACTIVE", hours=hours, start=start,
                            reservations=site_reservations or kvm_reservations())  # fmt: skip
    leases = leases_for(KVM)
    return leases, leases.describe(raw, kvm_request())


def test_extend_prolongs_the_lease(standin, cloud_env):
    standin.flavor_updates = "allow"  # the later flavor plugin (blazar@0280aeb0) moves dates
    leases, lease = active(standin, hours=8)
    new_end = extend(leases, lease, 24)
    (put,) = [b for m, _, b in standin.bodies if m == "PUT"]
    assert put == {"end_date": (lease.end + timedelta(hours=24)).strftime("%Y-%m-%d %H:%M")}
    assert new_end == (lease.end + timedelta(hours=24)).replace(second=0, microsecond=0)


def test_extend_refused_by_the_flavor_plugin_says_what_to_do_instead(standin, cloud_env):
    leases, lease = active(standin, hours=8)
    with pytest.raises(FlavorExtendRefused, match=r"does not prolong flavor reservations.*still "
                       r"ends.*`make down`, then `make up` for a new lease and `make train "
                       r"RESUME=1`"):  # fmt: skip
        extend(leases, lease, 24)
    # Blazar's update_lease leaves the lease in ERROR; its end stays.
    assert standin.leases[lease.id]["status"] == "ERROR"
    assert parse_date(standin.leases[lease.id]["end_date"]) == lease.end


def test_extend_refused_by_blazar_says_so(standin, cloud_env):
    leases, lease = active(standin, hours=8)
    standin.refuse_update = "Not enough resources available with query {'flavor': 'g1.h100'}"
    with pytest.raises(UserError, match=r"Blazar refused to extend .* by 24 h: Not enough "
                       r"resources.*still ends"):  # fmt: skip
        extend(leases, lease, 24)


def test_extend_past_seven_days_on_kvm_is_refused_before_asking(standin, cloud_env):
    leases, lease = active(standin, hours=160)
    with pytest.raises(UserError, match=r"at most 168 h.*HOURS=8 at most"):
        extend(leases, lease, 24)
    assert standin.count("PUT", LEASES + "/.*") == 0


def test_bare_metal_extends_only_in_the_last_48_hours(standin, cloud_env):
    clouds_yaml(cloud_env, standin.url, region="CHI@UC")
    standin.region = "CHI@UC"
    hosts = [
        {"resource_type": "physical:host", "min": 1, "max": 1, "hypervisor_properties": "",
         "resource_properties": json.dumps(["==", "$node_type", t])}
        for t in ("gpu_a100_pcie", "compute_cascadelake_r")
    ]  # fmt: skip
    hosts.append({"resource_type": "virtual:floatingip", "network_id": PUBLIC_NET, "amount": 1})
    raw = standin.add_lease("mystack", "ACTIVE", hours=100, reservations=hosts)
    leases = leases_for(UC)
    lease = leases.describe(raw, LeaseRequest("mystack", UC, "gpu_a100_pcie", 1, 100))
    with pytest.raises(UserError, match=r"only in its last 48 h.*run `make extend` after"):
        extend(leases, lease, 24)
    assert standin.count("PUT", LEASES + "/.*") == 0


def test_delete(standin, cloud_env):
    leases, lease = active(standin, hours=8)
    assert standin.reserved_flavors
    assert leases.delete(lease.id) is True
    assert lease.id not in standin.leases and not standin.reserved_flavors
    assert leases.delete(lease.id) is False  # already gone: not an error


def test_a_refused_credential_is_one_line(standin, cloud_env):
    clouds_yaml(cloud_env, standin.url, application_credential_secret="expired-one")
    with pytest.raises(UserError, match=r"refused the application credential of clouds.yaml "
                       r"entry 'chi-kvm@tacc'.*Unrestricted"):  # fmt: skip
        ensure(leases_for(KVM), kvm_request())
    assert standin.count("POST", LEASES) == 0
