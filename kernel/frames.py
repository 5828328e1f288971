"""`Frame`, pandas' DataFrame in the hints Dagster reads, without importing pandas when the code location loads.

Dagster resolves an asset's type hints when the definitions are built, so a hint naming `pd.DataFrame` would import
pandas for every load (about as long as `import dagster` itself). The type checker sees the DataFrame; at run time
the hint is `Any`, which is what Dagster made of `dict[str, pd.DataFrame | ...]` anyway.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pandas import DataFrame as Frame
else:
    Frame = Any
