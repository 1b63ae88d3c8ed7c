"""A fresh local Ray cluster of one-CPU nodes, for the benchmarks that compare 1 node with 2."""

from __future__ import annotations

import logging
from contextlib import contextmanager


@contextmanager
def one_cpu_nodes(nodes: int):
    """A cluster of `nodes` nodes with 1 CPU each, started and the driver connected on entry
    (before any clock starts), shut down on exit."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        for _ in range(nodes - 1):
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, logging_level=logging.ERROR)
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
