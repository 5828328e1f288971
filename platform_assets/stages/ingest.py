"""`<p>/raw`: one day of source rows per partition, in the platform's raw schema."""

import dagster as dg
import pandas as pd

from kernel import automation
from kernel.metadata import frame_metadata
from kernel.pipeline import Pipeline, run_days
from ml import ingest


def load_source(pipeline: Pipeline) -> tuple[ingest.Normalised, list[ingest.SourceFile], dict[str, int]]:
    """Read, normalise and rebase every source file of a pipeline, then apply its duplicates policy (across
    files: a later file may repeat an hour); also returns the rows it merged away per (rebased) day."""
    spec = pipeline.spec
    files = ingest.list_source_files(spec.source.uri, pipeline.root)
    if not files:
        raise dg.Failure(f"{pipeline.name}: no source files match {spec.source.uri!r}")
    parts, errors, notes = [], {}, []
    for source in files:
        normalised = ingest.normalise(ingest.read_source_file(source.path, spec, pipeline.root), spec, source.path)
        parts.append(normalised.frame)
        errors |= {f"{source.path}:{column}": value for column, value in normalised.coercion_errors.items()}
        notes.append(normalised.notes)
    frame = ingest.rebase(pd.concat(parts, ignore_index=True), pipeline.shift_days)
    collapsed = ingest.collapse_duplicates(frame, spec)
    merged = ingest.rebase_notes(ingest.merge_notes(*notes), pipeline.shift_days)
    return ingest.Normalised(collapsed.frame, errors, merged), files, collapsed.rows_collapsed


def build(pipeline: Pipeline) -> dg.AssetsDefinition:
    spec = pipeline.spec

    @pipeline.asset(
        "raw",
        description=f"One day of {spec.name} source rows, typed to the raw schema.",
        kinds={"pandas", "parquet"},
        automation_condition=automation.missing_latest_partition(),
    )
    def raw(context: dg.AssetExecutionContext) -> dg.Output[dict[str, pd.DataFrame]]:
        """One day of source rows, typed to the raw schema."""
        normalised, files, collapsed = load_source(pipeline)
        days = run_days(context)
        by_day = ingest.split_days(normalised.frame, days, spec)
        rows = {key: len(frame) for key, frame in by_day.items()}
        collapsed = {day: count for day, count in collapsed.items() if day in by_day}
        metadata = frame_metadata(pd.concat(by_day.values(), ignore_index=True))
        metadata |= {
            "rows_per_partition": dg.MetadataValue.json(rows),
            "empty_partitions": sum(1 for count in rows.values() if count == 0),
            "source_files": dg.MetadataValue.json([f.path for f in files]),
            "coercion_errors": dg.MetadataValue.json(normalised.coercion_errors),
            # Blank entities, infinite numbers, DST-touched times and event marker texts, per day of this run.
            "notes_per_day": dg.MetadataValue.json({d: n for d, n in normalised.notes.items() if d in by_day}),
            "duplicates_policy": spec.source.duplicates,
            "duplicate_rows_collapsed": sum(collapsed.values()),
            "duplicate_rows_collapsed_per_day": dg.MetadataValue.json(collapsed),
            "rebase_shift_days": pipeline.shift_days,
        }
        return dg.Output(by_day, metadata=metadata)

    return raw
