"""As a person uses it: the Dagster UI of `make dev`'s stack in a real browser, from the graph to a checked run."""

from __future__ import annotations

import functools
import http.server
import json
import re
import threading
from pathlib import Path

import pytest
from dev_stack import FIRST, NAME, STAGES, Stack
from playwright.sync_api import Page, expect

from .conftest import Screenshots

pytestmark = pytest.mark.e2e

# The modal Dagster opens over the graph on a home's first visit unless the instance sets `nux: enabled: false`.
SIGNUP_MODAL = "Join the Dagster community"


def test_graph_then_one_partition_through_the_ui_and_its_checks(
    stack: Stack, page: Page, screenshots: Screenshots
) -> None:
    # The asset graph: every stage of the pipeline drawn as a node, and no sign-up modal over it.
    page.goto(f"{stack.url}/asset-groups")
    graph_nodes = page.locator("svg foreignObject")  # the lineage graph draws each asset as HTML in the SVG
    for stage in STAGES:
        expect(graph_nodes.get_by_text(stage, exact=True)).to_be_visible()
    page.wait_for_load_state("networkidle")
    page.wait_for_timeout(2_000)  # the modal opens as soon as the UI's query for it answers: give it the time
    expect(page.get_by_role("dialog")).to_have_count(0)
    expect(page.get_by_text(SIGNUP_MODAL)).to_have_count(0)
    assert stack.graphql("{ shouldShowNux }")["shouldShowNux"] is False
    screenshots.take(page, "graph")

    # The raw asset's page.
    page.goto(f"{stack.url}/assets/{NAME}/raw")
    expect(page.get_by_role("tab", name="Checks")).to_be_visible()
    expect(page.get_by_text("Code location", exact=True)).to_be_visible()
    materialize = page.get_by_role("button", name="Materialize…")
    expect(materialize).to_be_enabled()
    screenshots.take(page, "asset")

    # Materialize… -> the partition dialog -> one partition (the first day, which automation leaves alone) -> launch.
    materialize.click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_text(f"Launch runs to materialize {NAME} / raw")).to_be_visible()
    partitions = dialog.get_by_role("textbox")
    expect(partitions).to_be_editable()
    show_all = dialog.get_by_role("button", name="Show all partitions")  # offered when some are over 90 days old
    if show_all.is_visible():
        show_all.click()
    partitions.fill(FIRST)
    partitions.press("Enter")
    expect(dialog.get_by_text("1 partition", exact=True)).to_be_visible()
    launch = dialog.get_by_role("button", name="Launch 1 run")
    expect(launch).to_be_enabled()
    screenshots.take(page, "launch-dialog")
    launch.click()
    expect(page.get_by_text("Launched run")).to_be_visible()
    href = page.get_by_role("link", name="View", exact=True).get_attribute("href")
    found = re.fullmatch(r"/runs/([0-9a-f-]{36})", href or "")
    assert found, f"the launch toast links to its run: {href!r}"
    run_id = found.group(1)

    # The run: one partition of raw only, and it succeeds.
    run = stack.graphql(
        "query($id: ID!) { runOrError(runId: $id) { ... on Run { tags { key value } assetSelection { path } } } }",
        {"id": run_id},
    )["runOrError"]
    assert {"key": "dagster/partition", "value": FIRST} in run["tags"]
    assert run["assetSelection"] == [{"path": [NAME, "raw"]}]
    status = stack.wait(
        "the run launched from the UI",
        lambda: (s := stack.run_status(run_id)) in {"SUCCESS", "FAILURE", "CANCELED"} and s,
        timeout=600,
    )
    assert status == "SUCCESS"
    page.goto(f"{stack.url}/runs/{run_id}")
    expect(page.get_by_text("Success", exact=True)).to_be_visible()
    expect(page.get_by_text(f"partition: {FIRST}")).to_be_visible()
    screenshots.take(page, "run")

    # The asset's checks tab: both checks listed as succeeded, each one's latest execution passed in that run.
    page.goto(f"{stack.url}/assets/{NAME}/raw")
    page.get_by_role("tab", name="Checks").click()
    expect(page.get_by_text("Checks (2)", exact=True)).to_be_visible()
    expect(page.get_by_text("Succeeded", exact=True)).to_have_count(2)
    for check in ("complete_days", "passes_expectations"):
        page.get_by_text(check, exact=True).first.click()
        expect(page).to_have_url(re.compile(f"checkDetail={check}"))
        expect(page.get_by_text("Passed", exact=True)).to_be_visible()
        expect(page.locator(f'a[href^="/runs/{run_id}"]').first).to_be_visible()
    screenshots.take(page, "checks")


def test_the_pictures_are_on_the_asset_pages(stack: Stack, page: Page, screenshots: Screenshots) -> None:
    """No click: the model's plots and the backtest plot (PNGs served by the stack's MLflow UI, the very files logged
    to their MLflow runs) and the predictions' small forecast vs actual are drawn on each asset's Overview."""
    mlflow = f'img[src^="http://127.0.0.1:{stack.ports["mlflow"]}/get-artifact?"]'
    pictures = {  # stage -> metadata label -> the picture on the page
        "model": {
            plot: f'{mlflow}[src*="plots%2F{plot}.png"]'
            for plot in ("forecast_vs_actual", "residuals", "feature_importance")
        },
        "backtest_report": {"backtest": f'{mlflow}[src*="reports%2Fbacktest.png"]'},
        "predictions": {"forecast_vs_actual": 'img[src^="data:image/svg+xml;base64,"]'},
    }
    for stage, expected in pictures.items():
        # Automation builds them after the first model (tests/test_dev_stack.py waits for that one when it runs first).
        before = stack.wait(f"{stage} to be materialised", lambda s=stage: stack.latest_metadata(s), timeout=900)
        page.goto(f"{stack.url}/assets/{NAME}/{stage}")
        expect(page.get_by_role("tab", name="Overview")).to_be_visible()
        for label, selector in expected.items():
            image = page.locator(selector)
            expect(image).to_have_count(1)
            image.scroll_into_view_if_needed()
            page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
            width, height = image.evaluate("img => [img.naturalWidth, img.naturalHeight]")
            assert width > 0 and height > 0
            # Drawn in place (not behind "[Show Markdown]"): the picture of the latest materialisation (automation may
            # have made a newer one while the page loaded).
            drawn = f"![{image.get_attribute('alt')}]({image.get_attribute('src')})"
            latest = [before, stack.latest_metadata(stage) or {}]
            assert any(m.get(label, "").startswith(drawn) for m in latest), (
                drawn[:200],
                [m.get(label) for m in latest],
            )
        first = page.locator(next(iter(expected.values())))
        first.evaluate("img => img.scrollIntoView({block: 'center', inline: 'nearest'})")
        screenshots.take(page, stage.replace("_", "-"))


ATTACKER_PAGE = """<!doctype html><title>a page the user visits</title><script>
const ui = "%(ui)s", wipe = %(wipe)s;
const get = ui + "/graphql?query=" + encodeURIComponent(wipe);
async function attack() {
  await new Promise(done => { const img = new Image(); img.onload = img.onerror = done; img.src = get; });
  const tries = [
    [get, {method: "POST", mode: "no-cors", headers: {"Content-Type": "application/x-www-form-urlencoded"}}],
    [ui + "/graphql", {method: "POST", mode: "no-cors", headers: {"Content-Type": "text/plain"},
                       body: JSON.stringify({query: wipe})}],
    [ui + "/graphql", {method: "POST", headers: {"Content-Type": "application/json"},
                       body: JSON.stringify({query: wipe})}],
  ];
  for (const [url, init] of tries) { try { await fetch(url, init); } catch (refused) {} }
  document.title = "attacked";
}
attack();
</script>"""


def test_a_page_from_another_origin_cannot_change_anything(stack: Stack, page: Page, tmp_path: Path) -> None:
    """The user visits another site while the platform runs: its `<img>` GET mutation and no-cors/CORS POSTs to the
    UI reach the webserver from the user's own browser, and none of them wipes the raw asset's materialisations."""
    query = (
        "query($path: [String!]!) { assetOrError(assetKey: {path: $path}) "
        "{ ... on Asset { assetMaterializations(limit: 10000) { runId } } } }"
    )
    before = len(stack.graphql(query, {"path": [NAME, "raw"]})["assetOrError"]["assetMaterializations"])
    assert before > 0, "the first test materialised raw"
    raw = json.dumps([NAME, "raw"])
    wipe = f"mutation {{ wipeAssets(assetPartitionRanges: [{{assetKey: {{path: {raw}}}}}]) {{ __typename }} }}"
    (tmp_path / "index.html").write_text(ATTACKER_PAGE % {"ui": stack.url, "wipe": json.dumps(wipe)})
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as site:
        threading.Thread(target=site.serve_forever, daemon=True).start()
        attacker = f"http://127.0.0.1:{site.server_address[1]}"
        page.goto(attacker)
        expect(page).to_have_title("attacked")
        site.shutdown()

    after = len(stack.graphql(query, {"path": [NAME, "raw"]})["assetOrError"]["assetMaterializations"])
    assert after >= before, f"raw lost materialisations: {before} -> {after}"
    log = stack.log.read_text()
    assert "GraphQL mutation over GET refused" in log
    assert f"cross-origin request from '{attacker}' refused" in log
