"""Driving `make dev`'s real stack from the end-to-end tests (the `stack` fixture itself is in conftest.py)."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import psutil
import pytest
import requests
from support import Listener, process_tree, tcp_listeners

# The stack's one pipeline: the bike spec under its own name, over two months.
NAME = "bike_dev"
FIRST, LAST = "2012-05-01", "2012-06-30"
STAGES = ("raw", "features", "model", "champion", "predictions", "backtest", "backtest_report")

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Stack:
    def __init__(self, url: str, process: subprocess.Popen[bytes], log: Path, ports: dict[str, int]) -> None:
        self.url, self.process, self.log, self.ports = url, process, log, ports
        self.listeners: set[Listener] = set()  # every one seen while the tests waited, runs included

    def scan_listeners(self) -> list[Listener]:
        """The stack's listening sockets now (also remembered in `self.listeners`)."""
        with contextlib.suppress(psutil.NoSuchProcess):
            now = tcp_listeners(process_tree(psutil.Process(self.process.pid)))
            self.listeners.update(now)
            return now
        return []

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        response = requests.post(f"{self.url}/graphql", json={"query": query, "variables": variables}, timeout=60)
        response.raise_for_status()
        body = response.json()
        assert "errors" not in body, body
        return body["data"]

    def runs(self) -> list[dict[str, Any]]:
        data = self.graphql(
            "{ runsOrError { ... on Runs { results { runId status tags { key value } assetSelection { path } } } } }"
        )
        return data["runsOrError"]["results"]

    def run_status(self, run_id: str) -> str:
        data = self.graphql("query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }", {"id": run_id})
        return data["runOrError"]["status"]

    def latest_metadata(self, stage: str) -> dict[str, str] | None:
        """Label -> markdown of the pipeline's stage's latest materialisation (None before the first)."""
        data = self.graphql(
            """query($path: [String!]!) { assetOrError(assetKey: {path: $path}) { ... on Asset {
                 assetMaterializations(limit: 1) { metadataEntries { label ... on MarkdownMetadataEntry { mdStr } } }
               } } }""",
            {"path": [NAME, stage]},
        )
        events = data["assetOrError"].get("assetMaterializations") or []
        return {e["label"]: e.get("mdStr", "") for e in events[0]["metadataEntries"]} if events else None

    def wait(self, what: str, condition: Callable[[], T | None], timeout: float) -> T:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"the run command exited; log:\n{self.log.read_text()[-4000:]}"
            self.scan_listeners()
            if value := condition():
                return value
            time.sleep(3)
        pytest.fail(f"timed out waiting for {what}; runs: {self.runs()}\nlog tail:\n{self.log.read_text()[-3000:]}")
