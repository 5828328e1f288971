"""A Ray worker node on this machine, joined to a running head over loopback: `python -m devtools.ray_node`.

`ray start --address=…` cannot do this here: the loopback setting that keeps every Ray socket on 127.0.0.1
(`devtools.stack.RAY_LOOPBACK_ENV`) also makes `ray start` refuse to join a cluster, and without it `ray start`
swaps 127.0.0.1 for the machine's routable address, where the head does not listen. So a node is started the way
Ray's own multi-node test harness (`ray.cluster_utils.Cluster.add_node`) starts one: a `ray._private.node.Node` with
its own raylet, object store and workers, on 127.0.0.1. The process runs until SIGTERM/SIGINT, then stops its node;
killing it (and its process group) with SIGKILL is a node lost without warning, as a crashed machine would be.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys

from devtools.stack import RAY_LOOPBACK_ENV

# Per node, enough for a day batch's frames in flight; Ray's default (30% of RAM) is 7 GB a node on this machine.
OBJECT_STORE_BYTES = 512 * 1024 * 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--address", required=True, help="the head's GCS address, 127.0.0.1:<port>")
    parser.add_argument("--num-cpus", type=float, default=1)
    parser.add_argument("--resources", default="{}", help='custom resources as JSON, e.g. {"large_memory": 1}')
    args = parser.parse_args(argv)
    os.environ.update(RAY_LOOPBACK_ENV)

    from ray._private.node import Node
    from ray._private.parameter import RayParams

    params = RayParams(
        gcs_address=args.address,
        node_ip_address="127.0.0.1",
        num_cpus=args.num_cpus,
        num_gpus=0,
        resources=json.loads(args.resources),
        object_store_memory=OBJECT_STORE_BYTES,
        # The head's log monitor already follows this machine's logs (RayParams types it `str | None`, reads a bool).
        include_log_monitor=False,  # pyright: ignore[reportArgumentType]
        node_manager_port=0,
        min_worker_port=0,
        max_worker_port=0,
    )
    params.dashboard_agent_listen_port = None  # a free one: the head's agent holds the configured port
    signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    node = Node(params, head=False, shutdown_at_exit=True, spawn_reaper=True)
    print(f"Ray worker node {node.node_id} joined {args.address} with {args.num_cpus:g} CPUs", flush=True)
    signal.sigwait(signals)
    node.kill_all_processes(check_alive=False, allow_graceful=True, wait=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
