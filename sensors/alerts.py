"""Run-failure alerts: always logged; posted to a webhook when PLATFORM_ALERT_WEBHOOK is set."""

import json
import urllib.request

import dagster as dg

from kernel.names import RANGE_START

WEBHOOK_ENV = "PLATFORM_ALERT_WEBHOOK"


def alert_payload(context: dg.RunFailureSensorContext) -> dict[str, str]:
    run = context.dagster_run
    return {
        "run_id": run.run_id,
        "job": run.job_name,
        "partition": run.tags.get("dagster/partition", run.tags.get(RANGE_START, "")),
        "error": context.failure_event.message or "",
    }


def post(url: str, payload: dict[str, str], timeout: float = 10) -> int:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return int(response.status)


@dg.run_failure_sensor(
    name="run_failure_alert",
    description="Logs every failed run and posts it to the webhook in PLATFORM_ALERT_WEBHOOK, if set.",
    default_status=dg.DefaultSensorStatus.RUNNING,
    monitor_all_code_locations=False,
)
def run_failure_alert(context: dg.RunFailureSensorContext) -> None:
    """Logs every failed run and posts it to the alert webhook when one is configured."""
    payload = alert_payload(context)
    context.log.error(f"run failed: {json.dumps(payload)}")
    url = dg.EnvVar(WEBHOOK_ENV).get_value()
    if url:
        status = post(url, payload)
        context.log.info(f"alert posted to webhook: HTTP {status}")
