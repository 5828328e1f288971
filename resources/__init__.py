"""Dagster resources: Ray compute, the partitioned asset store, MLflow, and the one environment switch."""
