"""The Dagster webserver behind a cross-site guard: `python -m webguard <dagster-webserver arguments>`."""
