"""What a Dagster run's event log says: its step failures, and where its time went per step and phase."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import dagster as dg


def failure_messages(records: Sequence[Any]) -> list[tuple[str, str]]:
    """(step, message) of every step failure in a run's event log, with the user error's first lines."""
    messages = []
    for record in records:
        event = record.dagster_event
        if event is None or not event.is_step_failure:
            continue
        error = getattr(event.event_specific_data, "error", None)
        text = error.to_string() if error is not None else (record.message or "")
        lines = [line for line in text.splitlines() if line.strip() and not line.startswith("  ")]
        messages.append((event.step_key or "run", "\n".join(lines[:8])))
    return messages


GATE_FAILURE = re.compile(r"blocking asset check failed|has not passed|Dependencies for step .* failed")


def gates_only(messages: Sequence[tuple[str, str]]) -> bool:
    """True when every step failure is a model gate rejecting a candidate (a product outcome, not an error)."""
    return bool(messages) and all(GATE_FAILURE.search(text) for _, text in messages)


def _first(events: list[tuple[float, str]], kind: str) -> float | None:
    return next((t for t, k in events if k == kind), None)


def _last(events: list[tuple[float, str]], kind: str) -> float | None:
    found = [t for t, k in events if k == kind]
    return found[-1] if found else None


def _span(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(b - a, 3)


def run_breakdown(instance: dg.DagsterInstance, run_id: str) -> dict[str, Any]:
    """Where a run's time went, from its event log: per step and per phase, plus event counts."""
    records = instance.all_logs(run_id)
    run_record = instance.get_run_record_by_id(run_id)
    typed = [(r.timestamp, r.step_key, r.dagster_event_type.value) for r in records if r.dagster_event_type]
    run_events = [(t, k) for t, s, k in typed if s is None]
    run_start = _first(run_events, "PIPELINE_START")
    run_end = _first(run_events, "PIPELINE_SUCCESS") or _first(run_events, "PIPELINE_FAILURE")
    created = run_record.create_timestamp.timestamp() if run_record else None
    steps: dict[str, list[tuple[float, str]]] = {}
    for t, step, kind in typed:
        if step is not None:
            steps.setdefault(step, []).append((t, kind))
    per_step: dict[str, dict[str, Any]] = {}
    for step, events in steps.items():
        start = _first(events, "STEP_START")
        end = _last(events, "STEP_SUCCESS") or _last(events, "STEP_FAILURE")
        begin = _first(events, "STEP_WORKER_STARTING") or start  # *_PLANNED events belong to run creation
        if begin is None:
            continue
        inputs = _last(events, "STEP_INPUT")
        first_output = _first(events, "STEP_OUTPUT")
        first_mat = _first(events, "ASSET_MATERIALIZATION")
        handled = _last(events, "HANDLED_OUTPUT")
        last_check = _last(events, "ASSET_CHECK_EVALUATION")
        phases: dict[str, Any] = {
            "offset_s": _span(run_start, begin),
            "wall_s": _span(begin, end),
            "spawn_import_s": _span(_first(events, "STEP_WORKER_STARTING"), _first(events, "STEP_WORKER_STARTED")),
            "resource_init_s": _span(_first(events, "RESOURCE_INIT_STARTED"), _first(events, "RESOURCE_INIT_SUCCESS")),
            "before_step_start_s": _span(begin, start),
            "load_inputs_s": _span(start, inputs),
            "compute_s": _span(inputs or start, first_output) if last_check is None else _span(start, last_check),
            "write_outputs_s": _span(first_output, first_mat) if first_mat else _span(first_output, handled),
            "materialization_events_s": _span(first_mat, handled) if first_mat else None,
            "materializations": sum(1 for _, k in events if k == "ASSET_MATERIALIZATION"),
            "check_evaluations": sum(1 for _, k in events if k == "ASSET_CHECK_EVALUATION"),
        }
        per_step[step] = {k: v for k, v in phases.items() if v not in (None, 0)}
    counts = Counter(k for _, _, k in typed)
    resource_init = [
        _span(t, next((u for u, s2, k2 in typed if k2 == "RESOURCE_INIT_SUCCESS" and u >= t and s2 == s), None))
        for t, s, k in typed
        if k == "RESOURCE_INIT_STARTED" and s is None
    ]
    totals: dict[str, float] = {}
    for phases in per_step.values():
        for key, value in phases.items():
            if key.endswith("_s") and key not in ("offset_s", "wall_s", "before_step_start_s"):
                totals[key] = round(totals.get(key, 0.0) + float(value), 2)
    step_walls = sum(float(p.get("wall_s", 0.0)) for p in per_step.values())
    planned = [t for t, _, k in typed if k.endswith("_PLANNED")]
    return {
        "run_id": run_id,
        "create_to_start_s": _span(created, run_start),
        "sum_of_step_walls_s": round(step_walls, 2),
        "planned_events": len(planned),
        "create_to_last_planned_event_s": _span(created, max(planned)) if planned else None,
        "start_to_end_s": _span(run_start, run_end),
        "run_level_resource_init_s": round(sum(r for r in resource_init if r is not None), 2) or None,
        "events": len(records),
        "event_counts": dict(sorted(counts.items())),
        "steps": per_step,
        "totals": totals,
    }
