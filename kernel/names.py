"""Names more than one layer agrees on: check names, run tags and metadata keys."""

# Checks on <p>/raw
PASSES_EXPECTATIONS = "passes_expectations"
COMPLETE_DAYS = "complete_days"
# Checks on <p>/features
FINITE_VALUES = "finite_values"
SCHEMA_STABLE = "schema_stable"
NO_DRIFT = "no_drift"
# Model gates on <p>/model: all blocking; a candidate must pass every one to be promoted.
BEATS_SEASONAL_NAIVE = "beats_seasonal_naive"
NOT_WORSE_THAN_CHAMPION = "not_worse_than_champion"
FINITE_PREDICTIONS = "finite_predictions"
MODEL_GATES = (BEATS_SEASONAL_NAIVE, NOT_WORSE_THAN_CHAMPION, FINITE_PREDICTIONS)
# Checks on <p>/predictions
COMPLETE = "complete"
FINITE_NON_NEGATIVE = "finite_non_negative"
PLAUSIBLE_RANGE = "plausible_range"
# The blocking checks of each stage: a day is used downstream only if its latest verdict of each passed.
GATES: dict[str, tuple[str, ...]] = {
    "raw": (PASSES_EXPECTATIONS,),
    "features": (FINITE_VALUES, SCHEMA_STABLE),
    "model": MODEL_GATES,
    "predictions": (COMPLETE, FINITE_NON_NEGATIVE),
}

# MLflow registry aliases
CHAMPION = "champion"
PREVIOUS_CHAMPION = "previous_champion"
# The Dagster pool every writer of those aliases (champion, rollback, manual promotion) takes a slot of: one at a
# time (deploy/local/dagster.yaml: default limit 1; production: deploy/k8s/pool-limits-job.yaml sets it to 1).
PROMOTION_POOL = "promotion"

# Run tags: Dagster's own range tags (one run over many partitions) and ours.
RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"
PIPELINE_TAG = "platform/pipeline"
RETIRED_TAG = "platform/retired"  # a retire run's tombstones: a JSON list of ingest log entry ids
SOURCE_FILES_TAG = "platform/source_files"  # a landing run's files: JSON {path: "size:mtime_ns"} as the sensor saw them

# Input metadata: a partitioned input may load with some upstream partitions absent, and the upstream's
# blocking checks whose per-day verdicts decide which loaded days are usable (the day gate).
ALLOW_MISSING_PARTITIONS = "platform/allow_missing_partitions"
GATE_CHECKS = "platform/gate_checks"
# Input metadata: the input's days load as references to their stored bytes (`resources.store.StoredDay`), which the
# asset's Ray tasks read themselves; the step moves keys, not data.
LAZY_INPUT = "platform/lazy_input"
# Input metadata: the entity columns of the pipeline, so the day gate can leave out a rejected series of a day.
ENTITY_COLUMNS = "platform/entity_columns"

# Metadata key of a stored partition's content fingerprint: on its materialisation (what was written) and on every
# check evaluation of it (what was judged); the day gate compares both with the bytes on disk.
FINGERPRINT = "fingerprint"
# Materialisation metadata of a day a Ray task built and judged as it wrote it (check name -> verdict as JSON): the
# writer's verdicts on the very bytes it wrote (named by FINGERPRINT), which its run's check step records without
# reading the day back.
WRITER_VERDICTS = "writer_verdicts"
# Check metadata: the series of a passing day rejected on their own (series label -> reason); the gate leaves them out.
REJECTED_SERIES = "rejected_series"
# Where every store write goes first (the ingest log's too): `<store root>/_unfinished/<file name>.tmp-<uuid>`, then
# renamed into place. One folder, so what `make dev`'s start and `unfinished_writes_sensor` sweep is one listing
# however large the store grows (an object store's lifecycle rule can expire it too); no pipeline name starts with `_`.
UNFINISHED_DIR = "_unfinished"
TEMPORARY = ".tmp-"
