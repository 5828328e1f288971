"""A real Dagster webserver behind the guard (`python -m webguard`, what `make dev` and production serve), attacked
as a web page in the user's browser would attack it, beside the stock webserver the same requests fool."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import psutil
import pytest
import requests
from dev_stack import free_port
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect
from websockets.typing import Origin, Subprotocol

from devtools.stack import stop, wait_for_port
from kernel.paths import PROJECT_ROOT
from webguard.guard import GuardPolicy
from webguard.identity import IdentityRefusal, stamp_requester

from .tiny_defs import precious

DEFS = Path(__file__).with_name("tiny_defs.py")
WIPE = 'mutation { wipeAssets(assetPartitionRanges: [{assetKey: {path: ["precious"]}}]) { __typename } }'
EVIL = "http://evil.example"
GRAPHQL_WS = Subprotocol("graphql-ws")
# What oauth2-proxy (deploy/k8s/oauth2-proxy.yaml) sets on every request it passes to the writable webserver.
IDENTITY = "X-Forwarded-Email"
LAUNCH = """mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on PythonError { message }
  }
}"""


@dataclass
class Server:
    url: str
    host: str
    home: Path
    log: Path

    def requesters(self) -> list[str]:
        """The `requested_by` of every handover run the instance holds."""
        with dg.DagsterInstance.from_config(str(self.home)) as instance:
            runs = instance.get_runs(dg.RunsFilter(job_name="handover_job"))
            configs: list[dict[str, Any]] = [dict(run.run_config) for run in runs]
            return [config["ops"]["handover"]["config"]["requested_by"] for config in configs]

    def materialisations(self) -> int:
        with dg.DagsterInstance.from_config(str(self.home)) as instance:
            return len(instance.fetch_materializations(dg.AssetKey("precious"), limit=100).records)


def serve(tmp_path: Path, module: str, *, hosts: str | None, identity_header: str | None = None) -> Iterator[Server]:
    """`python -m <module>` on a free loopback port, with one materialisation of `precious` in its home."""
    home = tmp_path / module
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert dg.materialize([precious], instance=instance).success
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    if hosts is not None:
        env["PLATFORM_UI_HOSTS"] = hosts.format(port=port)
    if identity_header is not None:
        env["PLATFORM_UI_IDENTITY_HEADER"] = identity_header
    log = tmp_path / f"{module}.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", module, "-f", str(DEFS), "-h", "127.0.0.1", "-p", str(port)],
            cwd=PROJECT_ROOT, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        wait_for_port(port, module, process, timeout=120)
        yield Server(f"http://127.0.0.1:{port}", f"127.0.0.1:{port}", home, log)
    finally:
        with contextlib.suppress(psutil.NoSuchProcess):
            root = psutil.Process(process.pid)
            stop([root, *root.children(recursive=True)])


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The guarded webserver as production's writable one runs behind oauth2-proxy: the signed-in user in IDENTITY."""
    hosts = "127.0.0.1:{port},localhost:{port}"
    yield from serve(tmp_path_factory.mktemp("guarded"), "webguard", hosts=hosts, identity_header=IDENTITY)


def launch(server: Server, run_config: object, user: str | None) -> requests.Response:
    """Launch handover_job as the UI's launchpad does, as `user` (None: no proxy header)."""
    params = {
        "selector": {
            "repositoryLocationName": "tiny_defs.py",
            "repositoryName": "__repository__",
            "jobName": "handover_job",
        },
        "runConfigData": run_config,
    }
    headers = {IDENTITY: user} if user else {}
    body = {"query": LAUNCH, "variables": {"params": params}}
    return requests.post(f"{server.url}/graphql", json=body, headers=headers, timeout=60)


def test_the_signed_in_user_is_who_the_run_says_asked(guarded: Server) -> None:
    """An empty requester (what the launchpad's scaffold leaves) and the user's own name launch, in both run config
    forms the UI sends (object, YAML text); the run records the proxy's user either way."""
    for run_config in (
        {"ops": {"handover": {"config": {"requested_by": ""}}}},
        "ops:\n  handover:\n    config:\n      requested_by: alice@example.com\n",
    ):
        answer = launch(guarded, run_config, "alice@example.com")
        assert answer.json()["data"]["launchRun"]["__typename"] == "LaunchRunSuccess", answer.text
    assert guarded.requesters() == ["alice@example.com", "alice@example.com"]
    assert "POST /graphql: mutation by alice@example.com" in guarded.log.read_text()


def test_a_requester_other_than_the_signed_in_user_is_refused(guarded: Server) -> None:
    before = len(guarded.requesters())
    answer = launch(guarded, {"ops": {"handover": {"config": {"requested_by": "bob"}}}}, "alice@example.com")
    assert answer.status_code == 403
    assert "'bob' is not the signed-in user 'alice@example.com'" in answer.text
    answer = launch(guarded, {"ops": {"handover": {"config": {"requested_by": "alice@example.com"}}}}, None)
    assert answer.status_code == 401, "a mutation without the proxy's header is not from the proxy"
    assert IDENTITY.lower() in answer.text
    inline = (
        LAUNCH.replace("$params: ExecutionParams!", "")
        .replace(
            "$params",
            '{selector: {repositoryLocationName: "tiny_defs.py", repositoryName: "__repository__", '
            'jobName: "handover_job"}, runConfigData: {ops: {handover: {config: {requested_by: "bob"}}}}}',
        )
        .replace("Launch()", "Launch")
    )
    answer = requests.post(
        f"{guarded.url}/graphql", json={"query": inline}, headers={IDENTITY: "alice@example.com"}, timeout=60
    )
    assert answer.status_code == 400, "run config inline in the document cannot be stamped"
    assert "as a GraphQL variable" in answer.text
    assert len(guarded.requesters()) == before


def test_queries_need_no_user_behind_the_proxy(guarded: Server) -> None:
    """The read-only webserver runs the same guard and is reached without the proxy: its reads still work."""
    answer = requests.post(f"{guarded.url}/graphql", json={"query": "{ version }"}, timeout=60)
    assert answer.json() == {"data": {"version": dg.__version__}}
    assert requests.post(f"{guarded.url}/report_asset_materialization/precious", json={}, timeout=60).status_code == 401


@pytest.mark.parametrize(
    ("variables", "refusal"),
    [
        ({"p": {"runConfigData": {"ops": {"a": {"config": {"requested_by": None}}}}}}, None),
        ({"p": [{"runConfigData": {"requested_by": "  alice  "}}]}, None),
        ({"p": {"runConfigData": {"ops": {"a": {"config": {"requested_by": "mallory"}}}}}}, 403),
        ({"p": {"runConfigData": "ops: [unclosed"}}, 400),
        ({"p": {"executionMetadata": {"tags": [{"key": "requested_by", "value": "mallory"}]}}}, None),
        ("not json", 400),
    ],
)
def test_stamping_judges_each_run_config(variables: object, refusal: int | None) -> None:
    body = {"query": "mutation m($p: X) { launchRun(executionParams: $p) { __typename } }", "variables": variables}
    if refusal is not None:
        with pytest.raises(IdentityRefusal) as refused:
            stamp_requester(json.dumps(body).encode(), "alice", IDENTITY)
        assert refused.value.status == refusal, refused.value.reason
        return
    outcome = stamp_requester(json.dumps(body).encode(), "alice", IDENTITY)
    sent = json.loads(outcome)["variables"]["p"]
    run_configs = [
        item["runConfigData"] for item in (sent if isinstance(sent, list) else [sent]) if "runConfigData" in item
    ]
    assert all("mallory" not in json.dumps(config) and "alice" in json.dumps(config) for config in run_configs)


def test_the_stock_webserver_runs_a_mutation_sent_with_get_from_any_origin(tmp_path: Path) -> None:
    """What the guard is for: the same request the guard refuses below wipes the stock webserver's asset."""
    for stock in serve(tmp_path, "dagster_webserver", hosts=None):
        assert stock.materialisations() == 1
        answer = requests.get(f"{stock.url}/graphql", params={"query": WIPE}, headers={"Origin": EVIL}, timeout=60)
        assert answer.json()["data"]["wipeAssets"]["__typename"] == "AssetWipeSuccess"
        assert stock.materialisations() == 0


def test_a_mutation_sent_with_get_is_refused_and_nothing_changes(guarded: Server) -> None:
    for headers in ({"Origin": EVIL}, {}):  # an <img src> sends no Origin at all
        answer = requests.get(f"{guarded.url}/graphql", params={"query": WIPE}, headers=headers, timeout=60)
        assert answer.status_code in {403, 405}, answer.text
        assert answer.text.count("\n") == 1, "one line says why"
    named = {"query": "query q { version } mutation m { wipeAssets(assetPartitionRanges: []) { __typename } }"}
    answer = requests.get(f"{guarded.url}/graphql", params={**named, "operationName": "q"}, timeout=60)
    assert answer.status_code == 405, "a document that holds a mutation is refused whichever operation it names"
    assert guarded.materialisations() == 1


def test_a_json_post_from_a_foreign_origin_is_refused(guarded: Server) -> None:
    for origin in (EVIL, "http://127.0.0.1:8000", "null"):  # another local port is another origin too
        answer = requests.post(f"{guarded.url}/graphql", json={"query": WIPE}, headers={"Origin": origin}, timeout=60)
        assert answer.status_code == 403, (origin, answer.text)
        assert origin in answer.text
    assert guarded.materialisations() == 1


def test_a_post_a_page_can_send_without_preflight_is_refused(guarded: Server) -> None:
    """Form and text/plain POSTs need no CORS preflight; Dagster would read a form POST's query from its URL."""
    for content_type in ("application/x-www-form-urlencoded", "text/plain", "multipart/form-data; boundary=x", None):
        headers = {"Content-Type": content_type} if content_type else {}
        answer = requests.post(f"{guarded.url}/graphql", params={"query": WIPE}, headers=headers, timeout=60)
        assert answer.status_code == 415, (content_type, answer.text)
    answer = requests.post(f"{guarded.url}/report_asset_materialization/precious", timeout=60)
    assert answer.status_code == 415
    assert guarded.materialisations() == 1


def test_a_foreign_host_is_refused(guarded: Server) -> None:
    """DNS rebinding: evil.example resolves to 127.0.0.1, so the browser sends its own name as Host."""
    answer = requests.post(
        f"{guarded.url}/graphql", json={"query": "{ version }"}, headers={"Host": "evil.example:80"}, timeout=60
    )
    assert answer.status_code == 400
    assert "evil.example" in answer.text
    assert requests.get(f"{guarded.url}/server_info", headers={"Host": "evil.example"}, timeout=60).status_code == 400


def test_a_websocket_from_a_foreign_origin_is_refused(guarded: Server) -> None:
    ws_url = guarded.url.replace("http", "ws") + "/graphql"
    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url, origin=Origin(EVIL), subprotocols=[GRAPHQL_WS], open_timeout=30)
    assert refused.value.response.status_code == 403
    with connect(ws_url, origin=Origin(guarded.url), subprotocols=[GRAPHQL_WS], open_timeout=30) as own:
        assert own.subprotocol == "graphql-ws"


def test_the_uis_own_requests_work(guarded: Server) -> None:
    own = {"Origin": guarded.url}
    answer = requests.post(f"{guarded.url}/graphql", json={"query": "{ version }"}, headers=own, timeout=60)
    assert answer.json() == {"data": {"version": dg.__version__}}
    assert requests.get(f"{guarded.url}/graphql", params={"query": "{ version }"}, timeout=60).ok
    assert "<html" in requests.get(f"{guarded.url}/assets", timeout=60).text.lower()
    local = guarded.url.replace("127.0.0.1", "localhost")
    assert requests.get(f"{local}/server_info", headers={"Origin": local}, timeout=60).ok
    signed_in = {**own, IDENTITY: "alice@example.com"}
    wiped = requests.post(f"{guarded.url}/graphql", json={"query": WIPE}, headers=signed_in, timeout=60).json()
    assert wiped["data"]["wipeAssets"]["__typename"] == "AssetWipeSuccess"
    assert guarded.materialisations() == 0


def test_each_refusal_is_logged_once_per_source(guarded: Server) -> None:
    origin = "http://flood.example"
    for _ in range(20):
        requests.post(f"{guarded.url}/graphql", json={"query": "{ version }"}, headers={"Origin": origin}, timeout=60)
    lines = [line for line in guarded.log.read_text().splitlines() if origin in line]
    assert len(lines) == 1, lines
    assert "refused POST /graphql" in lines[0]


def test_without_configured_names_the_guarded_webserver_does_not_start(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if key != "PLATFORM_UI_HOSTS"}
    done = subprocess.run(
        [sys.executable, "-m", "webguard", "-f", str(DEFS), "-p", str(free_port())],
        cwd=PROJECT_ROOT, env={**env, "DAGSTER_HOME": str(tmp_path)},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert "PLATFORM_UI_HOSTS" in done.stderr


@pytest.mark.parametrize(
    ("method", "headers", "query", "refused"),
    [
        ("GET", {"host": "ui.example.com"}, "", None),
        ("GET", {"host": "UI.example.com", "origin": "https://ui.example.com"}, "", None),
        ("GET", {"host": "ui.example.com:443"}, "", "host"),
        ("GET", {}, "", "host"),
        ("GET", {"host": "ui.example.com", "origin": "https://ui.example.com.evil.example"}, "", "origin"),
        ("GET", {"host": "ui.example.com"}, "query=subscription%20%7B%20x%20%7D", "get-mutation"),
        ("GET", {"host": "ui.example.com"}, "query=mutation%7B", "get-mutation"),
        ("GET", {"host": "ui.example.com"}, "query=%7B%20version%20%7D", None),
        ("HEAD", {"host": "ui.example.com"}, "query=mutation%20%7B%20x%20%7D", "get-mutation"),
        ("PUT", {"host": "ui.example.com", "content-type": "application/json; charset=utf-8"}, "", None),
        ("DELETE", {"host": "ui.example.com"}, "", "content-type"),
    ],
)
def test_the_policy_judges_each_rule(method: str, headers: dict[str, str], query: str, refused: str | None) -> None:
    policy = GuardPolicy.for_hosts(["ui.example.com"])
    scope = {
        "type": "http",
        "method": method,
        "path": "/graphql",
        "query_string": query.encode(),
        "headers": [(name.encode(), value.encode()) for name, value in headers.items()],
    }
    verdict = policy.judge(scope)
    assert (verdict.rule if verdict else None) == refused, verdict
