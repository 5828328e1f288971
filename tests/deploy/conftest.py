"""Fixtures for tests/deploy: the shipped Helm values and every Kubernetes manifest under deploy/.

The modules here import each other relatively (`from . import schemas`), so the package works under
whichever name it is imported as: `deploy` (pytest's `pythonpath = ["tests"]`) or `tests.deploy`.
"""

from __future__ import annotations

from typing import Any

import pytest

from . import inventory


@pytest.fixture(scope="session")
def helm_base() -> dict[str, Any]:
    return inventory.helm_base()


@pytest.fixture(scope="session")
def helm_prod() -> dict[str, Any]:
    return inventory.helm_prod()


@pytest.fixture(scope="session")
def helm_effective() -> dict[str, Any]:
    return inventory.helm_effective()


@pytest.fixture(scope="session")
def all_manifests() -> list[inventory.Manifest]:
    return inventory.manifests()
