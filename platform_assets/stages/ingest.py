"""`<p>/raw`: one day of source rows per partition, in the platform's raw schema, built from the ingest log, each day
written with its checks' verdicts on the bytes written (`ml/expectations.py`'s `judge_raw`).

A landing run (tag `platform/source_files`, from the landing sensor) first lands exactly the files it names, as the
sensor saw them; any other run only reads the log, except the first run of a pipeline whose log is empty, which lands
the files present then (how the shipped samples start). A day is built from the live log entries covering it alone.
"""

import json
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import dagster as dg

from kernel import automation
from kernel.metadata import frame_metadata
from kernel.names import SOURCE_FILES_TAG
from kernel.pipeline import Pipeline, run_days
from resources.ingest_log import IngestLog, Landed
from resources.storage import PartitionedParquetIOManager
from resources.store import Written

if TYPE_CHECKING:
    from ml import ingest


def named_files(tag: str) -> "list[ingest.SourceFile]":
    """The files a landing run names, as the sensor saw them (`{path: "size:mtime_ns"}`)."""
    from ml import ingest

    seen = json.loads(tag)
    files = []
    for path, fingerprint in sorted(seen.items()):
        size, mtime_ns = (int(part) for part in fingerprint.split(":"))
        files.append(ingest.SourceFile(path, size, mtime_ns))
    return files


def land_files(context: dg.AssetExecutionContext, pipeline: Pipeline, ingest_log: IngestLog) -> list[Landed]:
    """Land the run's named files; with no names, the files present now if the log is still empty; else nothing."""
    from ml import ingest

    tag = context.run.tags.get(SOURCE_FILES_TAG)
    if tag is not None:
        files = named_files(tag)
    elif not ingest_log.names():
        files = ingest.list_source_files(pipeline.spec.source.uri, pipeline.root)
        if not files:
            raise dg.Failure(
                f"{pipeline.name}: the ingest log is empty and no source files match {pipeline.spec.source.uri!r}"
            )
        context.log.info(f"{pipeline.name}: the ingest log is empty: landing the {len(files)} file(s) present now")
    else:
        return []
    landed = []
    try:
        for outcome in ingest_log.land_all(pipeline, files):
            log_line = context.log.info if outcome.entry is not None else context.log.warning
            log_line(f"{outcome.source}: {outcome.note}")
            landed.append(outcome)
    except ingest.SourceFormatError as exc:
        raise dg.Failure(f"{pipeline.name}: {exc}") from exc
    return landed


def build(pipeline: Pipeline) -> dg.AssetsDefinition:
    spec = pipeline.spec

    @pipeline.asset(
        "raw",
        description=f"One day of {spec.name} source rows, typed to the raw schema, built from the ingest log.",
        kinds={"pandas", "parquet"},
        automation_condition=automation.missing_latest_partition(),
    )
    def raw(
        context: dg.AssetExecutionContext, io_manager: dg.ResourceParam[PartitionedParquetIOManager]
    ) -> dg.Output[dict[str, Written]]:
        """One day of source rows from the ingest log, typed to the raw schema, naming the bytes it came from."""
        import pandas as pd

        from ml import ingest_log as log
        from ml.expectations import judge_raw

        ingest_log = IngestLog.of(io_manager, pipeline.name)
        landed = land_files(context, pipeline, ingest_log)
        days = run_days(context)
        wanted = log.source_days(days, pipeline.shift_days)
        try:
            entries = ingest_log.covering(wanted)
            parts = [(entry, ingest_log.read_rows(entry, wanted)) for entry in entries]
            built = log.build_raw_days(parts, days, spec, pipeline.shift_days)
        except log.IngestLogError as exc:
            raise dg.Failure(f"{pipeline.name}: {exc}") from exc
        # A day's own detail goes on its own materialisation: Dagster copies the output's metadata onto every
        # partition's event, so a per-day map there grows each event with the range (quadratic in the range).
        for day, frame in built.frames.items():
            own: dict[str, Any] = {
                "sources": dg.MetadataValue.json(built.lineage.get(day, [])),
                "rows_this_day": len(frame),
            }
            if collapsed := built.rows_collapsed.get(day):
                own["duplicate_rows_collapsed_this_day"] = collapsed
            if per_series := built.rows_collapsed_per_series.get(day):
                own["duplicate_rows_collapsed_per_series_this_day"] = dg.MetadataValue.json(per_series)
            if notes := built.notes.get(day):
                own["notes_this_day"] = dg.MetadataValue.json(notes)
            context.add_asset_metadata(own, partition_key=day)
        # Each day is judged here, where its frame is, and written with the verdicts on the bytes written: the run's
        # check step records them instead of reading every day back (a check run alone reads and judges the bytes).
        verdicts = judge_raw(built.frames, spec)
        output = tuple(pipeline.key("raw").path)
        written = {
            day: replace(io_manager.store.write(output, day, frame), verdicts=verdicts[day])
            for day, frame in built.frames.items()
        }
        rows = {key: len(frame) for key, frame in built.frames.items()}
        metadata = frame_metadata(pd.concat(built.frames.values(), ignore_index=True))
        metadata |= {
            "empty_partitions": sum(1 for count in rows.values() if count == 0),
            "source_files": dg.MetadataValue.json(
                [{"source": e.source, "sha256": e.sha256, "entry": e.name.id} for e in entries]
            ),
            "landed": dg.MetadataValue.json({outcome.source: outcome.note for outcome in landed}),
            "coercion_errors": dg.MetadataValue.json(
                {f"{e.source}:{column}": value for e in entries for column, value in e.parse_warnings.items()}
            ),
            "ingest_log_reads": dg.MetadataValue.json(vars(ingest_log.reads)),
            # Blank entities, infinite numbers, DST-touched times and event marker texts: each day's `notes_this_day`.
            "days_with_notes": sum(1 for notes in built.notes.values() if notes),
            "duplicates_policy": spec.source.duplicates,
            "duplicate_rows_collapsed": sum(built.rows_collapsed.values()),
            "rebase_shift_days": pipeline.shift_days,
        }
        return dg.Output(written, metadata=metadata)

    return raw
