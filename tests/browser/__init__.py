"""Browser tests of the Dagster UI (a package, like tests/deploy: see tests/integration/conftest.py for why)."""
