"""The raw schema every source is normalised into: defined once, from the spec."""

from __future__ import annotations

from kernel.spec import PipelineSpec

TIMESTAMP = "timestamp"
TIMESTAMP_DTYPE = "datetime64[ns]"
UTC = "UTC"


def timestamp_dtype(spec: PipelineSpec) -> str:
    """Timestamps are in the partitions' time zone: naive (meaning UTC) when it is UTC, the default, so UTC
    pipelines keep the schema they always had; tz-aware otherwise, so the two 01:30s of a DST change stay apart."""
    zone = spec.partitioning.timezone
    return TIMESTAMP_DTYPE if zone == UTC else f"datetime64[ns, {zone}]"


def raw_dtypes(spec: PipelineSpec) -> dict[str, str]:
    """Column -> dtype of a raw partition: timestamp, entities (text), numbers (float64), categories (text),
    event markers (float64)."""
    dtypes = {TIMESTAMP: timestamp_dtype(spec)}
    dtypes |= {column: "str" for column in spec.source.entity_columns}
    dtypes |= {column: "float64" for column in [spec.target, *spec.features.numeric]}
    dtypes |= {column: "str" for column in spec.features.categorical}
    dtypes |= {event.column: "float64" for event in spec.features.events}
    return dtypes
