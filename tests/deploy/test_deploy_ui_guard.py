"""Production's UI is behind the cross-site guard: the chart's fixed webserver command, run from our image's PATH,
starts the guarded webserver with the names the values configure, and its probes still pass."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import requests
from dev_stack import free_port

from devtools.stack import stop, wait_for_port
from kernel.paths import PROJECT_ROOT

from . import schemas
from .test_deploy_dockerfile import DOCKERFILE, parse_dockerfile

SHIM = schemas.DEPLOY_DIR / "docker" / "dagster-webserver"
TINY_DEFS = PROJECT_ROOT / "tests" / "ui_guard" / "tiny_defs.py"
WIPE = 'mutation { wipeAssets(assetPartitionRanges: [{assetKey: {path: ["precious"]}}]) { __typename } }'


def webserver_env(values: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in values["dagsterWebserver"]["env"]}


def test_the_webserver_runs_our_image_whose_dagster_webserver_is_the_guarded_one(
    helm_effective: dict[str, Any],
) -> None:
    (deployment,) = helm_effective["dagster-user-deployments"]["deployments"]
    assert helm_effective["dagsterWebserver"]["image"]["repository"] == deployment["image"]["repository"]
    _, stages = parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))
    runtime = stages[-1]
    assert "--chmod=0755 deploy/docker/dagster-webserver /app/bin/dagster-webserver" in runtime.all("COPY")
    (env,) = [line for line in runtime.all("ENV") if "PATH=" in line]
    assert env.split("PATH=")[1].split(":")[:2] == ["/app/bin", "/app/.venv/bin"], "the shim must come first"
    assert SHIM.read_text().rstrip().endswith('exec python -m webguard "$@"')


def test_the_probes_name_a_host_the_guard_allows(helm_effective: dict[str, Any]) -> None:
    webserver = helm_effective["dagsterWebserver"]
    allowed = webserver_env(helm_effective)["PLATFORM_UI_HOSTS"].split(",")
    assert f"localhost:{webserver['service']['port']}" in allowed, "kubectl port-forward's Host"
    for probe in ("readinessProbe", "livenessProbe"):
        headers = {h["name"]: h["value"] for h in webserver[probe]["httpGet"]["httpHeaders"]}
        assert headers["Host"] in allowed, probe


def test_the_charts_command_from_our_path_serves_the_guarded_ui(helm_effective: dict[str, Any], tmp_path: Path) -> None:
    """`dagster-webserver ...` as the chart's `/bin/bash -c` runs it, with the image's PATH order and the values'
    environment: the probe passes, the UI's own JSON POST works, a GET mutation, a mutation without the sign-in proxy's
    user header and a foreign Host are refused."""
    image_bin = tmp_path / "app-bin"
    image_bin.mkdir()
    shutil.copy(SHIM, image_bin / "dagster-webserver")
    home = tmp_path / "dagster_home"
    home.mkdir()
    port = free_port()
    env = {
        **os.environ,
        **webserver_env(helm_effective),
        "PATH": f"{image_bin}:{Path(sys.executable).parent}:{os.environ['PATH']}",
        "DAGSTER_HOME": str(home),
    }
    command = f"dagster-webserver -h 127.0.0.1 -p {port} -f {TINY_DEFS}"
    log = tmp_path / "webserver.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            ["/bin/bash", "-c", command], cwd=PROJECT_ROOT, env=env, stdout=output, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        wait_for_port(port, "dagster-webserver", process, timeout=120)
        url = f"http://127.0.0.1:{port}"
        probe = helm_effective["dagsterWebserver"]["readinessProbe"]["httpGet"]
        probe_headers = {h["name"]: h["value"] for h in probe["httpHeaders"]}
        assert requests.get(f"{url}{probe['path']}", headers=probe_headers, timeout=60).ok
        forwarded = {"Host": "localhost:8080", "Origin": "http://localhost:8080"}
        answer = requests.post(f"{url}/graphql", json={"query": "{ version }"}, headers=forwarded, timeout=60)
        assert answer.json()["data"]["version"]
        answer = requests.post(f"{url}/graphql", json={"query": WIPE}, headers=forwarded, timeout=60)
        assert answer.status_code == 401, "production's webserver takes mutations only with the proxy's user header"
        assert "x-forwarded-email" in answer.text
        answer = requests.get(f"{url}/graphql", params={"query": WIPE}, headers={"Host": "localhost:8080"}, timeout=60)
        assert answer.status_code == 405, answer.text
        assert requests.get(f"{url}/server_info", timeout=60).status_code == 400, "127.0.0.1:<port> is not configured"
        assert "refused GET /graphql" in log.read_text()
    finally:
        with contextlib.suppress(psutil.NoSuchProcess):
            root = psutil.Process(process.pid)
            stop([root, *root.children(recursive=True)])
