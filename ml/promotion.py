"""Promotion as one decision: from the evidence (gate verdicts, lineage, date order, track record, recorded
rollbacks and the aliases as they are), which version serves, which alias writes get there, and why.

The model gates, the `champion` asset, the rollback job and the manual promotion job all call this module; none of
them re-derives a rule. It knows no Dagster and no MLflow: the callers gather the evidence and carry out the moves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from kernel.names import BEATS_SEASONAL_NAIVE, CHAMPION, FINITE_PREDICTIONS, NOT_WORSE_THAN_CHAMPION, PREVIOUS_CHAMPION
from kernel.records import ModelRecord
from kernel.spec import PromotionSpec

# --- The model gates: one verdict per gate for one model partition ---


def beats_baseline(record: ModelRecord, min_improvement: float) -> bool:
    return record.metrics.mae <= (1 - min_improvement) * record.baseline.mae


def compared_mae(record: ModelRecord) -> float:
    """The candidate's MAE on the hours its champion was scored on (records written before champions were scored
    on part of the hold-out only carry the whole hold-out's)."""
    champion = record.champion
    return champion.candidate_mae if champion and champion.candidate_mae is not None else record.metrics.mae


def within_champion(record: ModelRecord, max_regression: float) -> bool:
    champion = record.champion
    if champion is None or not champion.comparable or champion.mae is None:
        return True
    return compared_mae(record) <= (1 + max_regression) * champion.mae


@dataclass(frozen=True)
class Check:
    """One judgement: passed, or why not."""

    passed: bool
    reason: str = ""


def judge_gates(record: ModelRecord, promotion: PromotionSpec) -> dict[str, Check]:
    """Every model gate's verdict on one model partition (a candidate must pass all to be promoted)."""
    champion = record.champion
    beats = beats_baseline(record, promotion.min_improvement_over_baseline)
    within = within_champion(record, promotion.max_regression_vs_champion)
    finite = record.non_finite_predictions == 0
    return {
        BEATS_SEASONAL_NAIVE: Check(
            beats,
            ""
            if beats
            else f"hold-out MAE {record.metrics.mae:.3f} is not {promotion.min_improvement_over_baseline:.0%} "
            f"below seasonal naive's {record.baseline.mae:.3f}",
        ),
        NOT_WORSE_THAN_CHAMPION: Check(
            within,
            ""
            if within
            else f"MAE {compared_mae(record):.3f} is more than {promotion.max_regression_vs_champion:.0%} worse than "
            f"champion v{champion.version if champion else '?'}'s {champion.mae if champion else '?'} on the same "
            f"{champion.hours if champion else '?'} hold-out hours",
        ),
        FINITE_PREDICTIONS: Check(
            finite, "" if finite else f"{record.non_finite_predictions} non-finite hold-out predictions"
        ),
    }


# --- Evidence ---


@dataclass(frozen=True)
class Rollback:
    """A recorded rollback: `version` was taken off the champion alias (for `to_version`) by someone, for a reason.
    It is never promoted again automatically; a manual promotion with `override` lifts it."""

    version: str
    partition: str
    requested_by: str
    reason: str
    at: str
    to_version: str
    to_partition: str
    run_id: str


ROLLBACK_TAGS = {
    "requested_by": "rolled_back_by",
    "reason": "rollback_reason",
    "at": "rolled_back_at",
    "to_version": "rolled_back_to",
    "to_partition": "rolled_back_to_partition",
    "run_id": "rollback_run_id",
}
ROLLBACK_LIFTED_AT = "rollback_lifted_at"


def rollback_tags(rollback: Rollback) -> dict[str, str]:
    """The registry version tags that record a rollback on the refused version."""
    return {tag: str(getattr(rollback, attribute)) for attribute, tag in ROLLBACK_TAGS.items()}


def parse_rollback(version: str, tags: Mapping[str, str]) -> Rollback | None:
    """The rollback a version's tags record, or None (never rolled back, or lifted by a later manual promotion)."""
    if any(tag not in tags for tag in ROLLBACK_TAGS.values()):
        return None
    if tags.get(ROLLBACK_LIFTED_AT, "") > tags[ROLLBACK_TAGS["at"]]:
        return None
    values = {attribute: tags[tag] for attribute, tag in ROLLBACK_TAGS.items()}
    return Rollback(version=version, partition=tags.get("partition", ""), **values)


def inputs_current(recorded: Mapping[str, str | None], stored: Mapping[str, str | None], where: str) -> Check:
    """Whether a model is current: every feature day it trained and was evaluated on (`recorded`: day -> the
    fingerprint it read) still holds those bytes (`stored`: day -> the fingerprint on disk now, absent if gone).
    A model whose days changed since is stale: it learned from data that is no longer the data."""
    if not recorded:
        return Check(False, "it records no fingerprints of the feature days it trained on (trained before they were)")
    changed = sorted(
        day for day, fingerprint in recorded.items() if fingerprint is None or stored.get(day) != fingerprint
    )
    if not changed:
        return Check(True)
    shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
    return Check(False, f"stale: {len(changed)} {where} day(s) it trained on changed since it was trained ({shown})")


@dataclass(frozen=True)
class Candidate:
    """A model version up for promotion and what is known of it. `gates`: whether every gate passed on its
    partition's current materialisation. `lineage`: whether its stored record, the run its gates judged and the
    registry's tags agree (None: not checked). `inputs`: whether the data it trained on is still the stored data
    (None: not checked). `track_record`: the out-of-sample record (None: not judged)."""

    version: str
    partition: str
    gates: Check
    lineage: Check | None = None
    track_record: Check | None = None
    inputs: Check | None = None


@dataclass(frozen=True)
class Aliases:
    """The registry's aliases as read when the decision is made, and the partitions of their versions."""

    champion: str | None
    previous: str | None
    champion_partition: str = ""
    previous_partition: str = ""


@dataclass(frozen=True)
class Evidence:
    """Everything a decision rests on. `candidates`: newest partition first (automatic promotion) or the one named
    version (manual promotion); `rollbacks`: the recorded, unlifted rollbacks by version."""

    model_name: str
    aliases: Aliases
    candidates: Sequence[Candidate] = ()
    rollbacks: Mapping[str, Rollback] = field(default_factory=dict)
    track_record_required: bool = False


@dataclass(frozen=True)
class Automatic:
    """The `champion` asset: promote the newest passing candidate, never backwards by date, never a rolled-back one."""


@dataclass(frozen=True)
class RollbackRequest:
    """The rollback job: put the previous champion back and refuse the current one from now on."""

    requested_by: str
    reason: str
    at: str
    run_id: str


@dataclass(frozen=True)
class ManualRequest:
    """The manual promotion job: promote one named version; `override` promotes it despite failed gates, a lineage
    mismatch or a recorded rollback (the reason is recorded)."""

    version: str
    requested_by: str
    reason: str
    override: bool = False


Request = Automatic | RollbackRequest | ManualRequest


@dataclass(frozen=True)
class Move:
    """One compare-and-set alias write: `alias` goes from `expected` to `to`, or nothing is written."""

    alias: str
    expected: str | None
    to: str


@dataclass(frozen=True)
class Decision:
    """The outcome: `promote` (the moves bring `version` to the champion alias, possibly none if it is there
    already), `keep` (the champion stays) or `refuse` (the request is refused: nothing is written). `record` is a
    rollback to record before the moves; `lift` the version whose rollback a manual override lifts."""

    outcome: Literal["promote", "keep", "refuse"]
    version: str | None
    moves: tuple[Move, ...] = ()
    reasons: tuple[str, ...] = ()
    record: Rollback | None = None
    lift: str | None = None
    candidate: Candidate | None = None


def eligible(candidate: Candidate, rollbacks: Mapping[str, Rollback]) -> bool:
    """Whether automatic promotion considers a candidate at all: its gates passed and it was never rolled back."""
    return candidate.gates.passed and candidate.version not in rollbacks


def decide(evidence: Evidence, request: Request) -> Decision:
    """The one promotion decision. An interrupted rollback (recorded, its alias writes not all made) is finished
    first, whatever the request: a crash between alias writes converges on the next run of any of the three."""
    aliases, repair, repaired = _finish_rollback(evidence)
    if isinstance(request, RollbackRequest):
        decision = _roll_back(evidence, aliases, request, repaired)
    elif isinstance(request, ManualRequest):
        decision = _promote_by_hand(evidence, aliases, request)
    else:
        decision = _promote_automatically(evidence, aliases)
    if not repair or decision.outcome == "refuse":
        return decision
    serving = decision.version if decision.moves else aliases.champion
    return Decision(
        outcome="promote",
        version=serving,
        moves=(*repair, *decision.moves),
        reasons=(*repaired, *decision.reasons),
        record=decision.record,
        lift=decision.lift,
        candidate=decision.candidate,
    )


def _finish_rollback(evidence: Evidence) -> tuple[Aliases, tuple[Move, ...], tuple[str, ...]]:
    """The aliases once an interrupted rollback is finished, the moves that finish it, and what was finished."""
    aliases, rollbacks = evidence.aliases, evidence.rollbacks
    champion, previous = aliases.champion, aliases.previous
    if champion is not None and (pending := rollbacks.get(champion)) is not None:
        # Recorded, but no alias moved yet: the refused version still serves.
        moves = [Move(CHAMPION, champion, pending.to_version)]
        if previous != champion:
            moves.append(Move(PREVIOUS_CHAMPION, previous, champion))
        done = Aliases(pending.to_version, champion, pending.to_partition, pending.partition)
        return done, tuple(moves), (f"finished the interrupted {_described(pending)}",)
    latest = max(rollbacks.values(), key=lambda r: r.at, default=None)
    if latest is not None and champion is not None and latest.to_version == champion == previous:
        # The champion moved back, then the run died before `previous_champion` took the refused version.
        done = Aliases(champion, latest.version, aliases.champion_partition, latest.partition)
        return (
            done,
            (Move(PREVIOUS_CHAMPION, previous, latest.version),),
            (f"finished the interrupted {_described(latest)}",),
        )
    return aliases, (), ()


def _described(rollback: Rollback) -> str:
    return (
        f"rollback of v{rollback.version} to v{rollback.to_version} by {rollback.requested_by} "
        f"({rollback.at}): {rollback.reason}"
    )


def _promotion_moves(aliases: Aliases, version: str) -> tuple[Move, ...]:
    """`previous_champion` takes the replaced champion first, then `champion` moves (each a compare-and-set)."""
    moves: list[Move] = []
    if aliases.champion is not None and aliases.previous != aliases.champion:
        moves.append(Move(PREVIOUS_CHAMPION, aliases.previous, aliases.champion))
    moves.append(Move(CHAMPION, aliases.champion, version))
    return tuple(moves)


def _promote_automatically(evidence: Evidence, aliases: Aliases) -> Decision:
    rollbacks = evidence.rollbacks
    notes = tuple(
        f"v{c.version} ({c.partition}) skipped: {_described(rollbacks[c.version])}"
        for c in evidence.candidates
        if c.gates.passed and c.version in rollbacks
    )
    chosen = next((c for c in evidence.candidates if eligible(c, rollbacks)), None)
    if chosen is None:
        reason = "no model partition passed every gate yet" + (" without being rolled back" if notes else "")
        if aliases.champion is None:
            return Decision("refuse", None, reasons=(reason, *notes))
        return Decision("keep", aliases.champion, reasons=(f"{reason}; the champion stays", *notes))
    held = _held_back(evidence, aliases, chosen)
    if held is not None:
        outcome, reason = held
        return Decision(outcome, aliases.champion, reasons=(reason, *notes), candidate=chosen)
    return Decision(
        "promote",
        chosen.version,
        moves=_promotion_moves(aliases, chosen.version),
        reasons=(
            f"v{chosen.version} ({chosen.partition}) is the newest model partition that passed every gate",
            *notes,
        ),
        candidate=chosen,
    )


def _held_back(evidence: Evidence, aliases: Aliases, chosen: Candidate) -> tuple[Literal["keep", "refuse"], str] | None:
    """Why the newest eligible candidate is not promoted (refused: the run fails; kept: the champion stays)."""
    refused = f"refusing to promote {evidence.model_name} v{chosen.version} for {chosen.partition}"
    if chosen.lineage is None or not chosen.lineage.passed:
        why = chosen.lineage.reason if chosen.lineage else "its lineage was not verified"
        return "refuse", f"{refused}: {why}; the champion stays"
    # A stale candidate waits for its partition to be retrained; a short track record for more scored days.
    waits = [
        (chosen.inputs, "whether its training data is current was not checked", "until that partition is retrained"),
    ]
    if evidence.track_record_required:
        waits.append((chosen.track_record, "its track record was not judged", ""))
    for check, unchecked, until in waits:
        if check is None or not check.passed:
            why = check.reason if check else unchecked
            if aliases.champion is None:
                return "refuse", f"{refused}: {why}; there is no champion yet"
            return "keep", f"{refused}: {why}; the champion stays" + (f" {until}" if until else "")
    if aliases.champion == chosen.version:
        return "keep", f"v{chosen.version} is the champion already"
    if aliases.champion is not None and aliases.champion_partition > chosen.partition:
        return "keep", (
            f"champion v{aliases.champion} ({aliases.champion_partition}) is newer than the newest passing "
            f"v{chosen.version} ({chosen.partition}): promotion never moves back by date"
        )
    return None


def _roll_back(evidence: Evidence, aliases: Aliases, request: RollbackRequest, repaired: tuple[str, ...]) -> Decision:
    if repaired:
        # Re-running after a crash finishes that rollback; it does not roll back once more.
        return Decision("promote", aliases.champion)
    champion, previous, name = aliases.champion, aliases.previous, evidence.model_name
    if previous is None or champion is None:
        return Decision(
            "refuse", champion, reasons=(f"{name}: nothing to roll back to (no {PREVIOUS_CHAMPION!r} alias)",)
        )
    if previous == champion:
        return Decision(
            "refuse",
            champion,
            reasons=(f"{name}: nothing to roll back to ({PREVIOUS_CHAMPION} is the champion v{champion})",),
        )
    if previous in evidence.rollbacks:
        return Decision(
            "refuse",
            champion,
            reasons=(
                f"{name}: nothing to roll back to: {PREVIOUS_CHAMPION} v{previous} is itself refused by the "
                f"{_described(evidence.rollbacks[previous])}; promote a version by hand instead",
            ),
        )
    if not request.reason.strip() or not request.requested_by.strip():
        return Decision("refuse", champion, reasons=(f"{name}: a rollback needs a reason and who asks for it",))
    record = Rollback(
        version=champion,
        partition=aliases.champion_partition,
        requested_by=request.requested_by,
        reason=request.reason,
        at=request.at,
        to_version=previous,
        to_partition=aliases.previous_partition,
        run_id=request.run_id,
    )
    return Decision(
        "promote",
        previous,
        moves=(Move(CHAMPION, champion, previous), Move(PREVIOUS_CHAMPION, previous, champion)),
        reasons=(
            f"rolled back v{champion} to v{previous}; v{champion} is not promoted automatically again "
            f"(a newer model that passes the gates may be)",
        ),
        record=record,
    )


def _promote_by_hand(evidence: Evidence, aliases: Aliases, request: ManualRequest) -> Decision:
    name, version = evidence.model_name, request.version
    candidate = next((c for c in evidence.candidates if c.version == version), None)
    if candidate is None:
        return Decision("refuse", aliases.champion, reasons=(f"v{version} is not a registered version of {name}",))
    if not request.reason.strip() or not request.requested_by.strip():
        return Decision(
            "refuse", aliases.champion, reasons=(f"{name}: a promotion by hand needs a reason and who asks",)
        )
    problems = []
    if not candidate.gates.passed:
        problems.append(f"it failed its gates ({candidate.gates.reason})")
    if candidate.lineage is None or not candidate.lineage.passed:
        problems.append(
            f"its lineage does not check out ({candidate.lineage.reason if candidate.lineage else 'not verified'})"
        )
    if candidate.inputs is None or not candidate.inputs.passed:
        problems.append(
            f"its training data is not current ({candidate.inputs.reason if candidate.inputs else 'not checked'})"
        )
    if version in evidence.rollbacks:
        problems.append(f"it was taken off by the {_described(evidence.rollbacks[version])}")
    if problems and not request.override:
        return Decision(
            "refuse",
            aliases.champion,
            reasons=(
                f"refusing to promote {name} v{version} by hand: {'; '.join(problems)}; "
                "set override: true (with a reason) to promote it anyway",
            ),
            candidate=candidate,
        )
    if aliases.champion == version:
        return Decision("keep", version, reasons=(f"v{version} is the champion already",), candidate=candidate)
    overridden = (f"override by {request.requested_by}: {'; '.join(problems)}",) if problems else ()
    return Decision(
        "promote",
        version,
        moves=_promotion_moves(aliases, version),
        reasons=(f"v{version} promoted by hand by {request.requested_by}: {request.reason}", *overridden),
        lift=version if version in evidence.rollbacks else None,
        candidate=candidate,
    )
