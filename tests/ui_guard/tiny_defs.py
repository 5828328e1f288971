"""The smallest code location with something to lose: one asset whose materialisations a wipe would remove."""

import dagster as dg


@dg.asset
def precious() -> int:
    """One materialisation the cross-site requests try to wipe."""
    return 1


defs = dg.Definitions(assets=[precious])
