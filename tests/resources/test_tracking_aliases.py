"""Alias moves are compare-and-set and rollbacks are recorded on the registry's versions (a real SQLite MLflow)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kernel.names import CHAMPION, PREVIOUS_CHAMPION
from ml.promotion import Move, Rollback, rollback_tags
from resources.tracking import AliasMovedError, MlflowTracking

NAME = "aliased"


@pytest.fixture
def tracking(tmp_path: Path) -> MlflowTracking:
    """A registry with versions 1..3 of one model, champion v1 (no model files: aliases and tags only)."""
    tracking = MlflowTracking(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    client = tracking.client()
    client.create_registered_model(NAME)
    for day in ("2012-06-25", "2012-06-26", "2012-06-27"):
        version = client.create_model_version(NAME, source=str(tmp_path), tags={"partition": day})
        assert version.version is not None
    client.set_registered_model_alias(NAME, CHAMPION, "1")
    return tracking


def test_moves_are_made_when_every_alias_is_where_the_decision_found_it(tracking: MlflowTracking) -> None:
    tracking.move_aliases(NAME, [Move(PREVIOUS_CHAMPION, None, "1"), Move(CHAMPION, "1", "2")])
    aliases = tracking.aliases(NAME)
    assert (aliases.champion, aliases.previous, aliases.champion_partition) == ("2", "1", "2012-06-26")


def test_an_alias_moved_since_the_decision_refuses_every_write(tracking: MlflowTracking) -> None:
    decided = [Move(PREVIOUS_CHAMPION, None, "1"), Move(CHAMPION, "1", "2")]
    tracking.client().set_registered_model_alias(NAME, CHAMPION, "3")  # another writer, after the decision
    with pytest.raises(
        AliasMovedError, match=r"'champion' alias moved since the decision was made \(expected v1, found v3\)"
    ):
        tracking.move_aliases(NAME, decided)
    assert (tracking.alias_version(NAME, CHAMPION), tracking.alias_version(NAME, PREVIOUS_CHAMPION)) == ("3", None)


def test_a_recorded_rollback_is_read_back_until_a_later_promotion_lifts_it(tracking: MlflowTracking) -> None:
    rollback = Rollback("2", "2012-06-26", "ana", "over-forecasts", "2026-12-06T10:00:00", "1", "2012-06-25", "run")
    tracking.tag_version(NAME, "2", rollback_tags(rollback))
    assert tracking.rollbacks(NAME) == {"2": rollback}
    tracking.tag_version(NAME, "2", {"rollback_lifted_at": "2026-12-06T11:00:00"})
    assert tracking.rollbacks(NAME) == {}
