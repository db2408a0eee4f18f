"""The services of a stack of several hosts (sim, Chameleon) checked from this machine the way
a user reaches them: through an SSH tunnel of the check's own, on free local ports (an open
`make tunnel`, or another program on 5000/8265/8333, is no matter), closed afterwards.
PostgreSQL is not tunnelled; MLflow's check reads the experiments, which goes through it."""

from __future__ import annotations

import dataclasses
import time

from core.state import Endpoints
from stack import access, health


def check(
    endpoints: Endpoints,
    way_in: access.Access,
    services_address: str,
    timeout: float = 90,
    with_nodes: bool = False,
) -> tuple[list[health.Check], list[dict]]:
    """The MLflow, Ray and object store checks through the tunnel, polled until all pass or
    `timeout`, and (with_nodes) Ray's nodes; each check shows the URL `make tunnel` gives the
    service."""
    usual = {field: getattr(endpoints, field) for _, _, _, field in access.TUNNELLED}
    with access.tunnel(way_in, services_address, "the health check") as local:
        through = {
            field: f"http://127.0.0.1:{port}"
            for field, port in local.items()
            if field != "s3_endpoint" or endpoints.object_store == "seaweedfs"
        }
        probe = dataclasses.replace(endpoints, **through)
        deadline = time.monotonic() + timeout
        while True:
            checks = health.remote_checks(probe)
            if all(c.healthy for c in checks) or time.monotonic() > deadline:
                break
            time.sleep(3)
        nodes = health.ray_nodes(probe) if with_nodes else []
    by_url = {through[field]: usual[field] for field in through}
    return [dataclasses.replace(c, url=by_url.get(c.url, c.url)) for c in checks], nodes
