"""The raw schema every source is normalised into: defined once, from the spec."""

from __future__ import annotations

from kernel.spec import PipelineSpec

TIMESTAMP = "timestamp"
TIMESTAMP_DTYPE = "datetime64[ns]"


def raw_dtypes(spec: PipelineSpec) -> dict[str, str]:
    """Column -> dtype of a raw partition: timestamp, entities (text), numbers (float64), categories (text),
    event markers (float64)."""
    dtypes = {TIMESTAMP: TIMESTAMP_DTYPE}
    dtypes |= {column: "str" for column in spec.source.entity_columns}
    dtypes |= {column: "float64" for column in [spec.target, *spec.features.numeric]}
    dtypes |= {column: "str" for column in spec.features.categorical}
    dtypes |= {event.column: "float64" for event in spec.features.events}
    return dtypes
