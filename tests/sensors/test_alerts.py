"""The run-failure alert posts a real HTTP request to the configured webhook."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import dagster as dg
import pytest

from sensors.alerts import WEBHOOK_ENV, post, run_failure_alert


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, str]]]]:
    received: list[dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(json.loads(body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            return

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/hook", received
    finally:
        server.shutdown()


def test_post_delivers_the_payload(webhook: tuple[str, list[dict[str, str]]]) -> None:
    url, received = webhook
    payload = {"run_id": "abc", "job": "__ASSET_JOB", "partition": "2012-06-30", "error": "boom"}
    assert post(url, payload) == 204
    assert received == [payload]


def test_post_raises_when_nobody_listens() -> None:
    with pytest.raises(OSError):
        post("http://127.0.0.1:9/hook", {"run_id": "x"}, timeout=2)


def test_a_failed_run_reaches_the_webhook(
    webhook: tuple[str, list[dict[str, str]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, received = webhook
    monkeypatch.setenv(WEBHOOK_ENV, url)

    @dg.asset
    def broken() -> None:
        raise ValueError("source went away")

    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([broken], instance=instance, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.RUN_FAILURE)
    run = instance.get_run_by_id(result.run_id)
    assert run is not None
    context = dg.build_run_status_sensor_context(
        sensor_name="run_failure_alert", dagster_event=failure, dagster_instance=instance, dagster_run=run
    ).for_run_failure()

    run_failure_alert(context)

    assert len(received) == 1
    assert received[0]["run_id"] == result.run_id
    assert "broken" in received[0]["error"]
