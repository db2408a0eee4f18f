"""A lease's whole life on the stand-in, as a user lives it with `python -m stack`: made,
used, ended by Blazar (instances, reserved flavor and floating IPs gone, as on a site), and
`make down` at every point of it leaving nothing of the stack behind, checked against the
stand-in's own list of what exists. KVM and bare metal alike."""

from __future__ import annotations

from datetime import timedelta

import pytest

from core.state import StackRecord
from tests.chameleon.conftest import clouds_yaml, made_stack, one_error_line, stack_cli, with_stubs
from tests.chameleon.standin import now

LEASES = r"/reservation/v1/leases"
SITES = ["KVM@TACC", "CHI@UC"]


def at(standin, site: str) -> None:
    standin.region = site


def settings_for(standin, tmp_path, stubs, site: str, **extra) -> dict:
    path = clouds_yaml(tmp_path / "clouds.yaml", standin.url, region=site)
    extra = {"SITE": site, **extra} if site != "KVM@TACC" else extra
    return with_stubs(stubs, OS_CLIENT_CONFIG_FILE=str(path), **extra)


@pytest.mark.parametrize("site", SITES)
def test_down_after_the_lease_ended_leaves_nothing_and_a_new_lease_follows(
    standin, home, tmp_path, stubs, site
):
    at(standin, site)
    state, settings = made_stack(standin, home, tmp_path, stubs, region=site)
    (lease_id,) = standin.leases
    assert standin.left("chameleon")["server"]  # the instances run
    status = stack_cli(home, state, "status", **settings)
    assert "ACTIVE, ends" in status.stdout and "node-hours so far" in status.stdout

    standin.end(lease_id)  # the lease's end: Blazar deletes what it reserved
    assert "server" not in standin.left("chameleon")
    gone = stack_cli(home, state, "status", **settings)
    assert gone.returncode == 0 and "TERMINATED" in gone.stdout, gone.stdout + gone.stderr

    down = stack_cli(home, state, "down", **settings)
    assert down.returncode == 0, down.stdout + down.stderr
    assert "make up" not in down.stdout + down.stderr  # never advises a new lease unasked
    assert "backed up" not in down.stdout  # nothing to back up from: the hosts are gone
    left = standin.left("chameleon")
    if site == "KVM@TACC":
        assert left == {"volume": ["chameleon-data"]}, left  # the data volume is kept
    else:
        assert left == {}, left
    # The destroy read nothing the lease's end took along.
    destroy = [c for c in terraform_calls(stubs) if "destroy" in c["args"]]
    assert destroy and all("-var=reservations_active=false" in c["args"] for c in destroy)

    again = stack_cli(home, state, "up", **settings)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "made" in again.stdout and len(standin.leases) == 1
    (new_id,) = standin.leases
    assert new_id != lease_id and StackRecord.read(state / "chameleon").lease.id == new_id


def terraform_calls(stubs) -> list[dict]:
    import json

    log = stubs["terraform_log"]
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.mark.parametrize("site", SITES)
def test_down_while_active_and_after_the_lease_was_deleted_by_hand(
    standin, home, tmp_path, stubs, site
):
    at(standin, site)
    state, settings = made_stack(standin, home, tmp_path, stubs, region=site)
    (lease_id,) = standin.leases
    standin.delete(lease_id)  # deleted by hand in the dashboard
    down = stack_cli(home, state, "down", **settings, PURGE="1", CONFIRM="chameleon")
    assert down.returncode == 0, down.stdout + down.stderr
    assert standin.left("chameleon") == {}  # PURGE: the data volume too


def test_down_before_an_advance_reservation_starts(standin, home, tmp_path, stubs):
    start = (now() + timedelta(days=2)).replace(second=0, microsecond=0)
    settings = settings_for(standin, tmp_path, stubs, "KVM@TACC")
    state = tmp_path / "state"
    up = stack_cli(home, state, "up", **settings, START=start.strftime("%Y-%m-%d %H:%M"))
    assert up.returncode == 0, up.stdout + up.stderr
    assert f"starts {start:%Y-%m-%d %H:%M} UTC" in up.stdout
    assert "run `make up` again after it starts" in up.stdout
    (lease,) = standin.leases.values()
    assert lease["status"] == "PENDING" and not standin.left("chameleon").get("server")
    assert StackRecord.read(state / "chameleon").state == "reserved"
    status = stack_cli(home, state, "status", **settings)
    assert "PENDING, ends" in status.stdout and f"starts {start:%Y-%m-%d %H:%M}" in status.stdout

    down = stack_cli(home, state, "down", **settings)
    assert down.returncode == 0, down.stdout + down.stderr
    assert standin.left("chameleon") == {}


@pytest.mark.parametrize("site", SITES)
def test_a_lease_that_goes_to_error_is_one_line_and_deleted(standin, home, tmp_path, stubs, site):
    at(standin, site)
    standin.start_as = "ERROR"
    settings = settings_for(standin, tmp_path, stubs, site)
    line = one_error_line(stack_cli(home, tmp_path / "state", "up", **settings))
    assert "went to ERROR" in line and "it was deleted" in line, line
    assert standin.count("POST", LEASES) == 1 and standin.left("chameleon") == {}


@pytest.mark.parametrize("site", SITES)
def test_a_lease_still_pending_at_the_timeout_is_waited_for_again(
    standin, home, tmp_path, stubs, site
):
    at(standin, site)
    standin.start_as = "PENDING"
    settings = settings_for(standin, tmp_path, stubs, site, LEASE_TIMEOUT="1")
    state = tmp_path / "state"
    line = one_error_line(stack_cli(home, state, "up", **settings))
    assert "still PENDING after 1 s" in line and "waits for the same lease" in line, line
    standin.start_as = "ACTIVE"
    again = stack_cli(home, state, "up", **settings)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "reused" in again.stdout and standin.count("POST", LEASES) == 1


@pytest.mark.parametrize(
    ("start", "expected"),
    [
        ("yesterday", "START=yesterday is not a time; give it in UTC as YYYY-MM-DD HH:MM"),
        ("2020-01-01 09:00", "START=2020-01-01 09:00 is in the past"),
    ],
)
def test_a_bad_start_is_one_line_and_nothing_is_made(
    standin, home, tmp_path, stubs, start, expected
):
    settings = settings_for(standin, tmp_path, stubs, "KVM@TACC", START=start)
    for dry_run in ("1", ""):
        line = one_error_line(
            stack_cli(home, tmp_path / "state", "up", **settings, DRY_RUN=dry_run)
        )
        assert expected in line, line
    assert standin.requests == [] and not (tmp_path / "state").exists()


def test_a_start_beyond_what_the_site_takes_is_blazars_one_line(standin, home, tmp_path, stubs):
    # Chameleon documents no advance window: whatever Blazar refuses is said as it says it.
    standin.refuse_create = "Lease start date is too far in the future"
    far = (now() + timedelta(days=400)).strftime("%Y-%m-%d %H:%M")
    settings = settings_for(standin, tmp_path, stubs, "KVM@TACC", START=far)
    line = one_error_line(stack_cli(home, tmp_path / "state", "up", **settings))
    assert "did not make the lease: lease start date is too far in the future" in line, line
    assert not standin.leases and standin.left("chameleon") == {}


@pytest.mark.parametrize("site", SITES)
def test_hours_beyond_the_sites_maximum_is_one_line(standin, home, tmp_path, stubs, site):
    at(standin, site)
    settings = settings_for(standin, tmp_path, stubs, site, LEASE_HOURS="169")
    line = one_error_line(stack_cli(home, tmp_path / "state", "up", **settings))
    assert f"LEASE_HOURS=169 is not a lease length at {site}" in line
    assert standin.requests == []


def test_a_backup_that_fails_offers_a_way_out_instead_of_a_dead_end(standin, home, tmp_path, stubs):
    state, settings = made_stack(standin, home, tmp_path, stubs)
    broken = {**settings, "STUB_BACKUP_FAILS": "1"}
    line = one_error_line(stack_cli(home, state, "down", **broken))
    assert "nothing was deleted and the stack still runs (its lease keeps charging)" in line
    assert "`make down SKIP_BACKUP=chameleon`" in line and "data volume keeps" in line, line
    assert standin.left("chameleon").get("server")  # nothing was taken down
    wrong = one_error_line(stack_cli(home, state, "down", **broken, SKIP_BACKUP="yes"))
    assert "SKIP_BACKUP=yes is not this stack's name" in wrong
    down = stack_cli(home, state, "down", **broken, SKIP_BACKUP="chameleon")
    assert down.returncode == 0, down.stdout + down.stderr
    assert "no backup (SKIP_BACKUP=chameleon)" in down.stdout
    assert standin.left("chameleon") == {"volume": ["chameleon-data"]}
