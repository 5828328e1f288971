"""The platform's Ray resource connects with one plain `ray.init` to a real local Ray head: the resource's init
options and env vars reach the tasks, and dagster-ray's Ray Data set-up (an import of `ray.data` in the step and a
remote task to apply it on a worker, seconds per step) does not run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from kernel.paths import PROJECT_ROOT

# A fresh process, so that `ray.data` in sys.modules can only come from the connect under test.
CONNECT = """
import json, os, sys
import dagster as dg
import ray
from resources.compute import RayCluster

resource = RayCluster(
    address=sys.argv[1],
    ray_init_options={"runtime_env": {"env_vars": {"FROM_OPTIONS": "1", "DROPPED": None}}},
    env_vars={"INJECTED": "2"},
)

@ray.remote
def env():
    return {name: os.environ.get(name) for name in ("FROM_OPTIONS", "INJECTED", "DROPPED")}

with dg.build_resources({"ray_cluster": resource}) as resources:
    seen = ray.get(env.remote())
    connected = ray.is_initialized()
    job = resources.ray_cluster.runtime_job_id
print(json.dumps({"env": seen, "connected": connected, "job": job, "after": ray.is_initialized(),
                  "ray_data_imported": "ray.data" in sys.modules}))
"""


def test_ray_cluster_connects_with_its_options_and_without_ray_data(ray_address: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", CONNECT, ray_address],
        cwd=PROJECT_ROOT,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["env"] == {"FROM_OPTIONS": "1", "INJECTED": "2", "DROPPED": None}
    assert result["connected"] is True
    assert result["job"]
    assert result["after"] is False, "the resource's teardown disconnects"
    assert result["ray_data_imported"] is False
