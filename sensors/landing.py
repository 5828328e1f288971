"""Landing-zone sensor: a new or changed source file requests raw and features for the days it holds.

The cursor maps each file path to its fingerprint (size and mtime). A file that cannot be read
into the raw schema is moved to the quarantine folder with a `.reason.txt` beside it; no run is
requested for it and the sensor keeps going with the other files.
"""

import json
from datetime import date
from pathlib import Path

import dagster as dg
import pyarrow.fs as pafs

from kernel.names import RANGE_END, RANGE_START, SOURCE_FILE_TAG
from kernel.pipeline import Pipeline
from ml import ingest


def quarantine(pipeline: Pipeline, source: ingest.SourceFile, reason: str, quarantine_dir: Path) -> str:
    """Move a malformed file out of the landing zone and write why next to it."""
    filesystem, _ = ingest.resolve_source(pipeline.spec.source.uri, pipeline.root)
    target_dir = quarantine_dir / pipeline.name
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / Path(source.path).name
    local = pafs.LocalFileSystem()
    pafs.copy_files(source.path, str(target), source_filesystem=filesystem, destination_filesystem=local)
    (target_dir / f"{target.name}.reason.txt").write_text(reason + "\n")
    filesystem.delete_file(source.path)
    return str(target)


def days_of(pipeline: Pipeline, source: ingest.SourceFile) -> list[date]:
    """Days a source file covers, after rebasing and clipped to the partitions; raises SourceFormatError."""
    spec = pipeline.spec
    frame = ingest.normalise(ingest.read_source_file(source.path, spec, pipeline.root), spec, source.path).frame
    frame = ingest.rebase(frame, pipeline.shift_days)
    keys = set(pipeline.partitions_def.get_partition_keys())
    return [day for day in ingest.days_in(frame) if str(day) in keys]


def build(pipeline: Pipeline, quarantine_dir: Path) -> dg.SensorDefinition:
    raw_key = pipeline.key("raw")
    targets = [raw_key, pipeline.key("features")]

    @dg.sensor(
        name=f"{pipeline.name}_landing_sensor",
        description=f"New or changed files in {pipeline.spec.source.uri} refresh {pipeline.name} raw and features.",
        asset_selection=dg.AssetSelection.assets(*targets),
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    def landing_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        """Requests raw and features runs for new or changed landing files; quarantines malformed ones."""
        seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
        files = ingest.list_source_files(pipeline.spec.source.uri, pipeline.root)
        requests, current = [], {}
        for source in files:
            current[source.path] = source.fingerprint
            if seen.get(source.path) == source.fingerprint:
                continue
            try:
                days = days_of(pipeline, source)
            except (ingest.SourceFormatError, ValueError, OSError) as exc:
                moved = quarantine(pipeline, source, str(exc), quarantine_dir)
                context.log.warning(f"quarantined {source.path} -> {moved}: {exc}")
                del current[source.path]
                continue
            if not days:
                context.log.info(f"{source.path} holds no day inside the partitions; nothing to run")
                continue
            requests.append(
                dg.RunRequest(
                    run_key=f"{source.path}:{source.fingerprint}",
                    asset_selection=targets,
                    tags={RANGE_START: str(min(days)), RANGE_END: str(max(days)), SOURCE_FILE_TAG: source.path},
                )
            )
        return dg.SensorResult(run_requests=requests, cursor=json.dumps(current, sort_keys=True))

    return landing_sensor
