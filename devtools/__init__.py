"""Local tooling: the dev stack (Ray head, MLflow UI, dagster dev) shared by `make dev` and the tests."""
