"""Offline tests of deploy/: Helm values, Kubernetes and KubeRay manifests, Dockerfile, instance config.

Reusable helpers: `schemas` (validators), `hardening` (security policy findings), `run_pods` (the Job
dagster-k8s builds for a run from our Helm values).
"""
