"""The progress queue a run's workers report to lives on the driver's node: losing a worker host
(sim's and Chameleon's workers are hosts of their own) leaves the driver's progress intact."""

from __future__ import annotations

import ray


def test_the_progress_queue_outlives_the_worker_hosts():
    from ray.cluster_utils import Cluster

    from training import cluster

    # The stack's shape: a head that trains nothing, two worker hosts.
    hosts = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    workers = [hosts.add_node(num_cpus=1) for _ in range(2)]
    ray.init(address=hosts.address)
    try:
        queues = [cluster.progress_queue() for _ in range(4)]
        for q in queues:
            q.put({"kind": "step", "step": 1})
        for node in workers:
            hosts.remove_node(node, allow_graceful=False)
        for q in queues:
            assert ray.get(q.actor.get_nowait.remote(), timeout=60) == {"kind": "step", "step": 1}
    finally:
        ray.shutdown()
        hosts.shutdown()
