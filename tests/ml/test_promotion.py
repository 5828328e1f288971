"""The one promotion decision, as a pure function: automatic promotion, rollback, promotion by hand, and the
convergence of an interrupted rollback."""

from __future__ import annotations

from dataclasses import replace

import pytest

from kernel.names import CHAMPION, PREVIOUS_CHAMPION
from ml.promotion import (
    Aliases,
    Automatic,
    Candidate,
    Check,
    Decision,
    Evidence,
    ManualRequest,
    Move,
    Rollback,
    RollbackRequest,
    decide,
    inputs_current,
    parse_rollback,
    rollback_tags,
)

PASSED, FAILED = Check(True), Check(False, "hold-out MAE 90.000 is not 5% below seasonal naive's 91.000")
ROLLBACK = RollbackRequest(
    requested_by="ana@example.com", reason="v3 over-forecasts", at="2026-12-06T10:00", run_id="r1"
)


def candidate(
    version: str, partition: str, gates: Check = PASSED, lineage: Check | None = PASSED, inputs: Check | None = PASSED
) -> Candidate:
    return Candidate(version, partition, gates, lineage, inputs=inputs)


def rolled_back(version: str, to: str, at: str = "2026-12-06T09:00") -> Rollback:
    return Rollback(version, f"p{version}", "bo@example.com", "bad", at, to, f"p{to}", "r0")


def evidence(champion: str | None, previous: str | None, *candidates: Candidate, **rollbacks: Rollback) -> Evidence:
    partition = next((c.partition for c in candidates if c.version == champion), "")
    return Evidence(
        "bikes",
        Aliases(champion, previous, partition),
        candidates,
        {r.version: r for r in rollbacks.values()},
    )


def applied(aliases: dict[str, str | None], decision: Decision) -> dict[str, str | None]:
    """The aliases after the decision's moves, each a compare-and-set against the state the previous one left."""
    state = dict(aliases)
    for move in decision.moves:
        assert state[move.alias] == move.expected, f"{move} expects what the registry no longer holds: {state}"
        state[move.alias] = move.to
    return state


def test_the_newest_passing_partition_is_promoted_previous_first() -> None:
    decision = decide(evidence("1", None, candidate("2", "06-27"), candidate("1", "06-26")), Automatic())
    assert (decision.outcome, decision.version) == ("promote", "2")
    assert decision.moves == (Move(PREVIOUS_CHAMPION, None, "1"), Move(CHAMPION, "1", "2"))


def test_a_failed_gate_skips_to_the_next_older_partition() -> None:
    decision = decide(
        evidence("1", None, candidate("3", "06-28", FAILED), candidate("2", "06-27"), candidate("1", "06-26")),
        Automatic(),
    )
    assert (decision.outcome, decision.version) == ("promote", "2")


def test_promotion_never_moves_back_by_date() -> None:
    champion = candidate("5", "06-28")
    decision = decide(
        replace(
            evidence("5", "4", champion), candidates=(candidate("6", "06-20"),), aliases=Aliases("5", "4", "06-28")
        ),
        Automatic(),
    )
    assert (decision.outcome, decision.version, decision.moves) == ("keep", "5", ())
    assert "never moves back" in decision.reasons[0]


def test_a_rolled_back_version_is_never_promoted_again_automatically() -> None:
    found = evidence("2", "3", candidate("3", "06-27"), candidate("2", "06-26"), v3=rolled_back("3", "2"))
    decision = decide(found, Automatic())
    assert (decision.outcome, decision.version, decision.moves) == ("keep", "2", ())
    assert any("v3 (06-27) skipped" in reason and "bo@example.com" in reason for reason in decision.reasons)


def test_a_newer_model_that_passes_may_be_promoted_after_a_rollback() -> None:
    found = evidence(
        "2", "3", candidate("4", "06-27"), candidate("3", "06-27"), candidate("2", "06-26"), v3=rolled_back("3", "2")
    )
    decision = decide(found, Automatic())
    assert (decision.outcome, decision.version) == ("promote", "4")
    assert applied({CHAMPION: "2", PREVIOUS_CHAMPION: "3"}, decision) == {CHAMPION: "4", PREVIOUS_CHAMPION: "2"}


def test_a_lineage_mismatch_refuses_and_the_champion_stays() -> None:
    tampered = candidate("2", "06-27", lineage=Check(False, "its stored record does not match"))
    decision = decide(evidence("1", None, tampered, candidate("1", "06-26")), Automatic())
    assert (decision.outcome, decision.moves) == ("refuse", ())
    assert "refusing to promote bikes v2 for 06-27: its stored record does not match" in decision.reasons[0]


@pytest.mark.parametrize(("champion", "outcome"), [("1", "keep"), (None, "refuse")])
def test_a_short_track_record_keeps_the_champion_or_refuses_without_one(champion: str | None, outcome: str) -> None:
    short = Candidate("2", "06-27", PASSED, PASSED, Check(False, "track record too short: 3 of 7 days scored"), PASSED)
    found = replace(evidence(champion, None, short, candidate("1", "06-26")), track_record_required=True)
    decision = decide(found, Automatic())
    assert (decision.outcome, decision.moves) == (outcome, ())
    assert "track record too short" in decision.reasons[0]


def test_nothing_passed_and_no_champion_is_refused() -> None:
    decision = decide(evidence(None, None, candidate("1", "06-26", FAILED)), Automatic())
    assert (decision.outcome, decision.version) == ("refuse", None)
    assert decision.reasons[0] == "no model partition passed every gate yet"


def test_rollback_puts_the_previous_champion_back_and_records_the_refused_version() -> None:
    found = replace(evidence("3", "2"), aliases=Aliases("3", "2", "06-27", "06-26"))
    decision = decide(found, ROLLBACK)
    assert (decision.outcome, decision.version) == ("promote", "2")
    assert applied({CHAMPION: "3", PREVIOUS_CHAMPION: "2"}, decision) == {CHAMPION: "2", PREVIOUS_CHAMPION: "3"}
    assert decision.record == Rollback(
        "3", "06-27", "ana@example.com", "v3 over-forecasts", ROLLBACK.at, "2", "06-26", "r1"
    )


@pytest.mark.parametrize(
    ("champion", "previous", "rollbacks", "message"),
    [
        (None, None, {}, "nothing to roll back to (no 'previous_champion' alias)"),
        ("2", "2", {}, "previous_champion is the champion v2"),
        ("2", "3", {"v3": rolled_back("3", "2")}, "previous_champion v3 is itself refused"),
    ],
)
def test_rollback_refuses_when_there_is_nothing_to_go_back_to(
    champion: str | None, previous: str | None, rollbacks: dict[str, Rollback], message: str
) -> None:
    decision = decide(evidence(champion, previous, **rollbacks), ROLLBACK)
    assert (decision.outcome, decision.moves, decision.record) == ("refuse", (), None)
    assert message in decision.reasons[0]


def test_a_crash_after_the_rollback_record_converges_on_the_next_decision() -> None:
    # Recorded, no alias moved yet: v3 still serves though refused.
    recorded = evidence("3", "2", v3=rolled_back("3", "2"))
    for request in (ROLLBACK, Automatic()):
        decision = decide(recorded, request)
        assert (decision.outcome, decision.record) == ("promote", None), "it finishes, it does not roll back again"
        assert applied({CHAMPION: "3", PREVIOUS_CHAMPION: "2"}, decision) == {CHAMPION: "2", PREVIOUS_CHAMPION: "3"}
        assert "finished the interrupted rollback of v3 to v2" in decision.reasons[0]


def test_a_crash_between_the_rollback_alias_writes_converges_on_the_next_decision() -> None:
    # The champion moved back, previous_champion did not: champion == previous_champion.
    halfway = evidence("2", "2", candidate("3", "06-27"), candidate("2", "06-26"), v3=rolled_back("3", "2"))
    decision = decide(halfway, ROLLBACK)
    assert applied({CHAMPION: "2", PREVIOUS_CHAMPION: "2"}, decision) == {CHAMPION: "2", PREVIOUS_CHAMPION: "3"}
    finished = evidence("2", "3", candidate("3", "06-27"), candidate("2", "06-26"), v3=rolled_back("3", "2"))
    assert decide(finished, Automatic()).moves == (), "once finished, nothing is left to do"
    assert decide(finished, ROLLBACK).outcome == "refuse", "rolling back to the refused v3 is refused"


def test_a_version_that_failed_its_gates_is_promoted_by_hand_only_with_override() -> None:
    found = evidence("1", None, candidate("2", "06-27", FAILED))
    refused = decide(found, ManualRequest("2", "ana@example.com", "the baseline had a holiday"))
    assert (refused.outcome, refused.moves) == ("refuse", ())
    assert "failed its gates (hold-out MAE" in refused.reasons[0] and "override: true" in refused.reasons[0]

    accepted = decide(found, ManualRequest("2", "ana@example.com", "the baseline had a holiday", override=True))
    assert (accepted.outcome, accepted.version) == ("promote", "2")
    assert applied({CHAMPION: "1", PREVIOUS_CHAMPION: None}, accepted) == {CHAMPION: "2", PREVIOUS_CHAMPION: "1"}
    assert any(reason.startswith("override by ana@example.com: it failed its gates") for reason in accepted.reasons)


def test_a_rolled_back_version_promoted_by_hand_needs_override_and_lifts_the_rollback() -> None:
    found = evidence("2", "3", candidate("3", "06-27"), v3=rolled_back("3", "2"))
    assert decide(found, ManualRequest("3", "ana", "fixed upstream")).outcome == "refuse"
    decision = decide(found, ManualRequest("3", "ana", "fixed upstream", override=True))
    assert (decision.outcome, decision.version, decision.lift) == ("promote", "3", "3")


def test_a_passing_version_is_promoted_by_hand_and_an_unknown_one_refused() -> None:
    found = evidence("2", "1", candidate("1", "06-20"))
    decision = decide(found, ManualRequest("1", "ana", "v2 drifts"))
    assert (decision.outcome, decision.lift) == ("promote", None)
    assert applied({CHAMPION: "2", PREVIOUS_CHAMPION: "1"}, decision) == {CHAMPION: "1", PREVIOUS_CHAMPION: "2"}
    unknown = decide(found, ManualRequest("9", "ana", "why not"))
    assert (unknown.outcome, unknown.reasons) == ("refuse", ("v9 is not a registered version of bikes",))


def test_a_rollback_record_survives_as_tags_and_a_later_lifting_ends_it() -> None:
    rollback = rolled_back("3", "2")
    tags = {**rollback_tags(rollback), "partition": "p3"}
    assert parse_rollback("3", tags) == rollback
    assert parse_rollback("3", {**tags, "rollback_lifted_at": "2026-12-06T09:30"}) is None
    assert parse_rollback("3", {**tags, "rollback_lifted_at": "2026-12-06T08:00"}) == rollback, "lifted before"
    assert parse_rollback("3", {"partition": "p3"}) is None


STALE = inputs_current({"06-20": "sha256:a", "06-21": "sha256:b"}, {"06-20": "sha256:a", "06-21": "sha256:c"}, "f")


def test_a_model_is_current_only_while_every_day_it_trained_on_holds_the_bytes_it_read() -> None:
    recorded = {"06-20": "sha256:a", "06-21": "sha256:b"}
    assert inputs_current(recorded, dict(recorded), "f").passed
    assert not STALE.passed
    assert "06-21" in STALE.reason and "06-20" not in STALE.reason
    gone = inputs_current(recorded, {"06-20": "sha256:a"}, "f")
    assert not gone.passed and "06-21" in gone.reason, "a day removed from the store is a change too"
    unread = inputs_current({"06-20": None}, {"06-20": None}, "f")
    assert not unread.passed, "a day read without a fingerprint cannot be shown to be current"
    assert not inputs_current({}, {}, "f").passed, "a record from before fingerprints proves nothing"


def test_a_stale_newest_candidate_waits_for_its_retraining_and_never_falls_back_to_an_older_one() -> None:
    evidence = Evidence(
        "bike",
        Aliases("1", None, "06-10"),
        candidates=[candidate("3", "06-27", inputs=STALE), candidate("2", "06-20")],
    )
    decision = decide(evidence, Automatic())
    assert decision.outcome == "keep" and decision.version == "1" and not decision.moves
    assert "stale" in decision.reasons[0] and "retrained" in decision.reasons[0]

    first = decide(
        Evidence("bike", Aliases(None, None), candidates=[candidate("3", "06-27", inputs=STALE)]), Automatic()
    )
    assert first.outcome == "refuse" and not first.moves


def test_a_stale_version_is_promoted_by_hand_only_with_an_override() -> None:
    evidence = Evidence("bike", Aliases("1", None, "06-10"), candidates=[candidate("3", "06-27", inputs=STALE)])
    refused = decide(evidence, ManualRequest("3", "ana@example.com", "urgent"))
    assert refused.outcome == "refuse" and "training data is not current" in refused.reasons[0]
    forced = decide(evidence, ManualRequest("3", "ana@example.com", "urgent", override=True))
    assert forced.outcome == "promote" and forced.version == "3"
    assert any("training data is not current" in reason for reason in forced.reasons)
