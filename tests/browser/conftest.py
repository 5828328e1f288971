"""Headless Debian Chromium driven by Playwright, and where its screenshots go (listed at the end of the run)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from kernel.paths import PROJECT_ROOT

# Debian's browser (`make chromium` installs it): Playwright's own browser download cannot be fetched here.
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
    "--no-first-run", "--disable-component-update", "--disable-sync",
]  # fmt: skip
# Git-ignored and left in the work tree, so CI's clone keeps the last run's pictures.
SCREENSHOTS = PROJECT_ROOT / "tests" / "artifacts" / "screenshots"

# The UI is slow to answer while runs share the two cores with it: wait long, but never forever.
expect.set_options(timeout=60_000)


class Screenshots:
    def __init__(self, folder: Path) -> None:
        self.folder, self.taken = folder, list[Path]()

    def take(self, page: Page, name: str) -> Path:
        """A picture once the page's queries have answered (the UI shows grey placeholders until then)."""
        path = self.folder / f"{len(self.taken) + 1:02d}-{name}.png"
        with contextlib.suppress(PlaywrightTimeoutError):  # the picture matters more than a quiet network
            page.wait_for_load_state("networkidle", timeout=15_000)
        page.screenshot(path=path)
        self.taken.append(path)
        print(f"screenshot: {path}")
        return path


_screenshots: list[Screenshots] = []


@pytest.fixture(scope="session")
def screenshots() -> Screenshots:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for old in SCREENSHOTS.glob("*.png"):
        old.unlink()
    shots = Screenshots(SCREENSHOTS)
    _screenshots.append(shots)
    return shots


@pytest.fixture
def page(tmp_path: Path, screenshots: Screenshots, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh browser profile (no remembered dismissals); on a failure, a screenshot of where it stopped."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make chromium` installs Debian's chromium (make test does it first)")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            tmp_path / "chromium-profile",
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1600, "height": 1000},
        )
        context.set_default_timeout(60_000)
        try:
            page = context.new_page()
            yield page
            report = getattr(request.node, "rep_call", None)
            if report is not None and report.failed:
                screenshots.take(page, "failure")
        finally:
            context.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item) -> Iterator[None]:
    report = yield
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    taken = [path for shots in _screenshots for path in shots.taken]
    if taken:
        terminalreporter.section("browser screenshots")
        for path in taken:
            terminalreporter.write_line(str(path))
