"""Planning a batch: decide every account in scope, count the outcomes, apply the batch limit.

Planning sends nothing; ``meterctl batch plan`` prints the plan and ``batch run`` executes it
(re-checking each account right before its command). Cases are consumed once, as they come,
so the caller can stream them from the database; :class:`BatchPlanner` also lets the caller
handle each decision as it is made (print it, write an order) without keeping them all.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from policies.batch_limit import check_batch_limit
from policies.chain import RULES, Rule, evaluate
from policies.facts import Case, Decision, Outcome, PolicySettings, Reason, Verdict


_NOT_BLOCKING = frozenset({Verdict.ALLOW, Verdict.SCHEDULE})


@dataclass(frozen=True, slots=True)
class BatchPlan:
    """The decisions of one batch and what they add up to."""

    decisions: tuple[Decision, ...]  # empty when planned with keep_decisions=False
    in_scope: int  # accounts evaluated, paid-up ones included
    by_outcome: Mapping[Outcome, int]  # every Outcome is a key, zero included
    by_block_code: Mapping[
        str, int
    ]  # accounts blocked by each code (an account counts once per code)
    limit: Reason  # the batch-wide limit's answer (rule "batch_limit")

    @property
    def planned(self) -> int:
        """Accounts the batch would disconnect, now or on a schedule."""
        return self.by_outcome[Outcome.DISCONNECT] + self.by_outcome[Outcome.SCHEDULE]

    @property
    def within_limit(self) -> bool:
        """False when the batch must stop and ask a supervisor."""
        return self.limit.verdict is Verdict.ALLOW


class BatchPlanner:
    """Decide cases one at a time and keep the running totals.

    >>> planner = BatchPlanner(settings, now)          # doctest: +SKIP
    >>> for case in cases: emit(planner.add(case))     # doctest: +SKIP
    >>> plan = planner.finish()                        # doctest: +SKIP
    """

    __slots__ = ("_by_code", "_counts", "_decisions", "_keep", "_now", "_rules", "_settings")

    def __init__(
        self,
        settings: PolicySettings,
        now: datetime,
        *,
        rules: tuple[Rule, ...] = RULES,
        keep_decisions: bool = True,
    ) -> None:
        if now.tzinfo is None:
            raise ValueError(
                "BatchPlanner needs a timezone-aware now (UTC from the engine's clock)"
            )
        self._settings = settings
        self._now = now
        self._rules = rules
        self._keep = keep_decisions
        self._decisions: list[Decision] = []
        self._counts: dict[Outcome, int] = dict.fromkeys(Outcome, 0)
        self._by_code: dict[str, int] = {}

    def add(self, case: Case) -> Decision:
        """Decide one case, count it and return its decision."""
        decision = evaluate(case, self._settings, self._now, self._rules)
        self._count(decision)
        return decision

    def extend(self, cases: Iterable[Case]) -> None:
        """Decide and count every case (the batch path: no per-case method lookups)."""
        settings, now, rules = self._settings, self._now, self._rules
        count = self._count
        for case in cases:
            count(evaluate(case, settings, now, rules))

    def _count(self, decision: Decision) -> None:
        outcome = decision.outcome
        self._counts[outcome] += 1
        if outcome is Outcome.BLOCKED:
            codes = [r.code for r in decision.reasons if r.verdict not in _NOT_BLOCKING]
            # A code counts once per account, even if a composed chain repeats it.
            for code in codes if len(codes) == 1 else set(codes):
                self._by_code[code] = self._by_code.get(code, 0) + 1
        if self._keep:
            self._decisions.append(decision)

    def finish(self) -> BatchPlan:
        """The plan so far, with the batch limit applied to the totals."""
        in_scope = sum(self._counts.values())
        planned = self._counts[Outcome.DISCONNECT] + self._counts[Outcome.SCHEDULE]
        return BatchPlan(
            decisions=tuple(self._decisions),
            in_scope=in_scope,
            by_outcome=dict(self._counts),
            by_block_code=dict(sorted(self._by_code.items(), key=lambda kv: (-kv[1], kv[0]))),
            limit=check_batch_limit(planned, in_scope, self._settings),
        )


def plan_batch(
    cases: Iterable[Case],
    settings: PolicySettings,
    now: datetime,
    *,
    rules: tuple[Rule, ...] = RULES,
    keep_decisions: bool = True,
) -> BatchPlan:
    """Decide every case (iterated once) and apply the batch-wide limit to the result.

    With ``keep_decisions=False`` only the totals are kept (for a dry count of a huge scope).
    """
    planner = BatchPlanner(settings, now, rules=rules, keep_decisions=keep_decisions)
    planner.extend(cases)
    return planner.finish()
