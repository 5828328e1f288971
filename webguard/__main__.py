"""`python -m webguard [dagster-webserver options]`: the stock Dagster webserver, its app wrapped in the guard.

The UI's names come from `PLATFORM_UI_HOSTS` (comma-separated `Host` values, e.g. `127.0.0.1:3000,localhost:3000`
locally, the ingress host in production); without it the server does not start, rather than guess.
`PLATFORM_UI_IDENTITY_HEADER` (e.g. `X-Forwarded-Email`, behind oauth2-proxy) names the header holding the signed-in
user: mutations then need it, and the run configs they send name that user as `requested_by`.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import dagster_webserver.cli

from webguard.guard import CrossSiteGuard, GuardPolicy

HOSTS_VARIABLE = "PLATFORM_UI_HOSTS"
IDENTITY_VARIABLE = "PLATFORM_UI_IDENTITY_HEADER"


def main() -> None:
    hosts = os.environ.get(HOSTS_VARIABLE, "").split(",")
    try:
        policy = GuardPolicy.for_hosts(hosts, os.environ.get(IDENTITY_VARIABLE))
    except ValueError as exc:
        sys.exit(f"{HOSTS_VARIABLE} is empty or unset: {exc} (e.g. {HOSTS_VARIABLE}=127.0.0.1:3000,localhost:3000)")
    build_app = dagster_webserver.cli.create_app_from_workspace_process_context

    def guarded_app(*args: Any, **kwargs: Any) -> CrossSiteGuard:
        return CrossSiteGuard(build_app(*args, **kwargs), policy)

    # The one seam the stock CLI offers: it builds its app through this module attribute, then serves it.
    dagster_webserver.cli.create_app_from_workspace_process_context = guarded_app
    dagster_webserver.cli.main()


if __name__ == "__main__":
    main()
