"""Rule 4, meter identity (核对客户编号和表计编号): cut the right meter or none.

Seed 002 names "停电前未核对客户编号和表计编号等导致现场停错电" (disconnecting the wrong
customer because the customer and meter numbers were not checked) as a cause of wrongful
disconnection. At plan time the rule compares the billing record with the engine's meter
record; right before the command the engine reads the meter's own number (DI 04000402) into
``MeterFacts.observed_meter_no`` and runs the rule again, so a swapped meter is caught.

Numbers and addresses are compared exactly: normalising them (leading zeros, case) is the
store's job at import, and a lenient comparison here would err on the dangerous side.
"""

from __future__ import annotations

from datetime import datetime

from base.i18n import N_, Msg
from policies.facts import Case, PolicySettings, Reason, Verdict

RULE = "meter"
METER_BOUND = "meter_bound"
METER_MISSING = "meter_missing"
METER_NOT_BOUND = "meter_not_bound"
METER_MISMATCH = "meter_mismatch"
METER_SWAPPED = "meter_swapped"
CODES = (METER_BOUND, METER_MISSING, METER_NOT_BOUND, METER_MISMATCH, METER_SWAPPED)

_BOUND = Reason(
    RULE,
    Verdict.ALLOW,
    METER_BOUND,
    Msg(N_("meter bound to the account; number and address agree")),
)


def check_meter(case: Case, settings: PolicySettings, now: datetime) -> Reason:
    """Allow when the meter record exists, is bound to this account and agrees with it."""
    account = case.account
    meter = case.meter
    if meter is None or account.meter_no is None:
        what = (
            N_("no meter record: nothing to disconnect safely")
            if meter is None
            else N_("the account names no meter: nothing to disconnect safely")
        )
        return Reason(RULE, Verdict.BLOCK, METER_MISSING, Msg(what))
    if meter.account_no != account.account_no:
        return Reason(
            RULE,
            Verdict.BLOCK,
            METER_NOT_BOUND,
            Msg(
                N_("meter {meter} is bound to no account, not to {account}")
                if meter.account_no is None
                else N_("meter {meter} is bound to account {other}, not to {account}"),
                meter=meter.meter_no,
                other=meter.account_no,
                account=account.account_no,
            ),
        )
    if account.meter_no != meter.meter_no:
        return Reason(
            RULE,
            Verdict.BLOCK,
            METER_MISMATCH,
            Msg(
                N_("account names meter number {named} but the meter record has {recorded}"),
                named=account.meter_no,
                recorded=meter.meter_no,
            ),
        )
    if account.meter_address != meter.address:
        return Reason(
            RULE,
            Verdict.BLOCK,
            METER_MISMATCH,
            Msg(
                N_("account names meter address {named} but the meter record has {recorded}"),
                named=account.meter_address,
                recorded=meter.address,
            ),
        )
    observed = meter.observed_meter_no
    if observed is not None and observed != account.meter_no:
        return Reason(
            RULE,
            Verdict.BLOCK,
            METER_SWAPPED,
            Msg(
                N_(
                    "the meter at address {address} reports number {observed}, not "
                    "{expected}: meter swapped or miswired, send a field crew"
                ),
                address=meter.address,
                observed=observed,
                expected=account.meter_no,
            ),
        )
    return _BOUND
