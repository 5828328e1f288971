"""`Frame`, pandas' DataFrame in the hints Dagster reads, without importing pandas when the code location loads.

Dagster resolves an asset's type hints when the definitions are built, so a hint naming `pd.DataFrame` would import
pandas for every load (about as long as `import dagster` itself). The type checker sees the DataFrame; at run time
the hint is `Any`, which is what Dagster made of `dict[str, pd.DataFrame | ...]` anyway.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kernel.schema import TIMESTAMP

if TYPE_CHECKING:
    from pandas import DataFrame as Frame
else:
    Frame = Any


@dataclass(frozen=True)
class FrameShape:
    """What a run's metadata says about frames it did not hold: rows, columns (name, dtype) and the time range."""

    rows: int
    columns: tuple[tuple[str, str], ...]
    first: str | None = None
    last: str | None = None

    @classmethod
    def of(cls, frame: "Frame") -> "FrameShape":
        columns = tuple((str(name), str(dtype)) for name, dtype in frame.dtypes.items())
        if TIMESTAMP not in frame.columns or not len(frame):
            return cls(len(frame), columns)
        return cls(len(frame), columns, str(frame[TIMESTAMP].min()), str(frame[TIMESTAMP].max()))

    @classmethod
    def combined(cls, shapes: "Sequence[FrameShape]") -> "FrameShape":
        """The shape of the shapes' frames concatenated (the columns of the first: a run writes one schema)."""
        firsts = [s.first for s in shapes if s.first is not None]
        lasts = [s.last for s in shapes if s.last is not None]
        return cls(
            sum(s.rows for s in shapes),
            shapes[0].columns if shapes else (),
            min(firsts) if firsts else None,
            max(lasts) if lasts else None,
        )
