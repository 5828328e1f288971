"""Local tooling: the dev stack (Ray head, MLflow UI, Dagster's three services) shared by `make dev` and the tests."""
