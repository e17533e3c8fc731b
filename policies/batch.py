"""Planning a batch: decide every account in scope, count the outcomes, apply the batch limit.

Planning sends nothing; ``meterctl batch plan`` prints the plan and ``batch run`` executes it
(re-checking each account right before its command). Cases are consumed once, as they come,
so the caller can stream them from the database; :class:`BatchPlanner` also lets the caller
handle each decision as it is made (print it, write an order) without keeping them all.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from policies.batch_limit import check_batch_limit
from policies.chain import RULES, Rule, evaluate
from policies.execution import judge_at_execution
from policies.facts import Case, Decision, Outcome, PolicySettings, Reason, Verdict
from policies.window import region_of

_BLOCK = Verdict.BLOCK
_BLOCKED = Outcome.BLOCKED
_SCHEDULE = Outcome.SCHEDULE


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

    __slots__ = (
        "_blocked",
        "_by_code",
        "_decisions",
        "_disconnect",
        "_keep",
        "_lead",
        "_now",
        "_rules",
        "_schedule",
        "_settings",
    )

    def __init__(
        self,
        settings: PolicySettings,
        now: datetime,
        *,
        rules: tuple[Rule, ...] = RULES,
        keep_decisions: bool = True,
        execution_lead: timedelta | None = None,
    ) -> None:
        """``execution_lead``: judge the window when each command would execute (from the
        execution time to ``lead`` later, :func:`~policies.execution.judge_at_execution`);
        None judges it at ``now`` only, as the dispatcher does right before a command."""
        if now.tzinfo is None:
            raise ValueError(
                "BatchPlanner needs a timezone-aware now (UTC from the engine's clock)"
            )
        self._settings = settings
        self._now = now
        self._rules = rules
        self._keep = keep_decisions
        self._lead = execution_lead
        self._decisions: list[Decision] = []
        # Plain counters: an Enum's __hash__ is Python code, too slow to key 300k updates on.
        self._disconnect = self._schedule = self._blocked = 0
        self._by_code: dict[str, int] = {}

    def add(self, case: Case) -> Decision:
        """Decide one case, count it and return its decision."""
        decision = evaluate(case, self._settings, self._now, self._rules)
        if self._lead is not None:
            decision = judge_at_execution(
                decision,
                self._settings,
                self._now,
                self._lead,
                region_of(case, self._settings),
            )
        outcome = decision.outcome
        if outcome is _BLOCKED:
            self._blocked += 1
            self._count_codes(decision)
        elif outcome is _SCHEDULE:
            self._schedule += 1
        else:
            self._disconnect += 1
        if self._keep:
            self._decisions.append(decision)
        return decision

    def extend(self, cases: Iterable[Case]) -> None:
        """Decide and count every case: :meth:`add` for a whole scope, with less overhead."""
        settings, now, rules, lead = self._settings, self._now, self._rules, self._lead
        keep = self._decisions.append if self._keep else None
        count_codes = self._count_codes
        disconnect = schedule = blocked = 0
        # Decisions are acyclic, so the cycle collector has nothing to find among them; left
        # on, it re-scans every kept decision as the plan grows (a large share of the time
        # for 300k accounts). Paused only for this loop, and restored as it was.
        collecting = gc.isenabled()
        gc.disable()
        try:
            for case in cases:
                decision = evaluate(case, settings, now, rules)
                if lead is not None:
                    decision = judge_at_execution(
                        decision, settings, now, lead, region_of(case, settings)
                    )
                outcome = decision.outcome
                if outcome is _BLOCKED:
                    blocked += 1
                    count_codes(decision)
                elif outcome is _SCHEDULE:
                    schedule += 1
                else:
                    disconnect += 1
                if keep is not None:
                    keep(decision)
        finally:
            if collecting:
                gc.enable()
            self._disconnect += disconnect
            self._schedule += schedule
            self._blocked += blocked

    def _count_codes(self, decision: Decision) -> None:
        codes = [r.code for r in decision.reasons if r.verdict is _BLOCK]
        by_code = self._by_code
        # A code counts once per account, even if a composed chain repeats it.
        for code in codes if len(codes) == 1 else set(codes):
            by_code[code] = by_code.get(code, 0) + 1

    def finish(self) -> BatchPlan:
        """The plan so far, with the batch limit applied to the totals."""
        planned = self._disconnect + self._schedule
        in_scope = planned + self._blocked
        return BatchPlan(
            decisions=tuple(self._decisions),
            in_scope=in_scope,
            by_outcome={
                Outcome.DISCONNECT: self._disconnect,
                Outcome.SCHEDULE: self._schedule,
                Outcome.BLOCKED: self._blocked,
            },
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
