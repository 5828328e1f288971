"""Series of a multi-series frame (`source.entity_columns`): their labels, and a frame with some of them left out.

A series' label is its entity values joined by "/" (a blank value reads `<blank>`); a single-series pipeline has one
series, labelled "". A frame that had series left out says which and why in `attrs[SERIES_LEFT_OUT]` (label ->
reason), which the asset store keeps with the stored bytes, so every later stage can name what it did not see.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

SERIES_LEFT_OUT = "platform.series_left_out"
BLANK = "<blank>"


def labels(frame: pd.DataFrame, entities: Sequence[str]) -> pd.Series:
    """Each row's series label ("" for every row without entity columns)."""
    import pandas as pd

    if not entities:
        return pd.Series("", index=frame.index, dtype="str")
    parts = [frame[column].astype("str").where(frame[column].notna(), BLANK) for column in entities]
    joined = parts[0]
    for part in parts[1:]:
        joined = joined + "/" + part
    return joined.astype("str")


def left_out(frame: pd.DataFrame) -> dict[str, str]:
    """The series this frame was built without, and why (none: `{}`)."""
    return dict(frame.attrs.get(SERIES_LEFT_OUT, {}))


def without(frame: pd.DataFrame, entities: Sequence[str], dropped: Mapping[str, str]) -> pd.DataFrame:
    """`frame` without the rows of the `dropped` series (label -> reason), saying so in its `attrs` (added to what it
    already left out); other attrs are kept."""
    if not dropped:
        return frame
    kept = frame[~labels(frame, entities).isin(list(dropped))].reset_index(drop=True)
    kept.attrs = {**frame.attrs, SERIES_LEFT_OUT: {**left_out(frame), **dropped}}
    return kept
