"""Words for the codes and enum values people read: reason codes, outcomes, order states,
relay states, order kinds (marked for the catalog, translated when shown).

The codes themselves stay as they are in JSON, audit records and the database; only what a
person reads in a table or a sentence goes through :func:`label`.
"""

from __future__ import annotations

from collections.abc import Mapping

from base.i18n import N_, _

# What each reason code means, in a few words an operator reads (translated when shown; the
# codes themselves and the JSON stay as they are).
REASON_TEXT = {
    "in_arrears": N_("in arrears"),
    "not_in_arrears": N_("not in arrears"),
    "agreement_signed": N_("cost-control agreement signed"),
    "no_agreement": N_("no cost-control agreement"),
    "notice_served": N_("notice served"),
    "notice_missing": N_("no notice delivered"),
    "notice_pending": N_("notice period not over"),
    "notice_stale": N_("notice too old"),
    "inside_window": N_("inside the disconnection window"),
    "outside_window": N_("outside the disconnection window"),
    "held_to_window": N_("would execute after the window closes: held to the next opening"),
    "not_important": N_("not an important customer"),
    "important_timeline_required": N_("important customer: warning and instruction first"),
    "important_timeline_pending": N_("important customer: waiting for the timeline"),
    "important_timeline_due": N_("important customer: execution due"),
    "meter_bound": N_("the right meter, bound to the account"),
    "meter_missing": N_("no meter"),
    "meter_not_bound": N_("meter not bound to this account"),
    "meter_mismatch": N_("meter number differs from the account's"),
    "meter_swapped": N_("the meter answered with another number"),
    "no_exemption": N_("no power guarantee"),
    "exemption_active": N_("power guarantee (保电) in force"),
    "humanitarian_needs_approval": N_("humanitarian case: needs a supervisor's approval"),
    "humanitarian_approved": N_("humanitarian case approved by a supervisor"),
    "batch_within_limit": N_("within the batch limit"),
    "batch_limit_exceeded": N_("batch limit exceeded"),
    "rule_error": N_("a rule failed: blocked to be safe"),
    "notice_previous_episode": N_("notice served for an earlier debt"),
    "important_timeline_expired": N_("important customer: timeline starts again"),
    "important_authorities_missing": N_("important customer: no authority to copy"),
    "important_authorities_not_copied": N_("important customer: authorities not copied"),
    # The screening's own reasons (exceptions): why an account in arrears is not cut yet.
    "scheduled": N_("scheduled"),
    "order_pending": N_("order pending"),
    "command_failed": N_("command failed"),
    "field_order": N_("field order"),
    "not_yet_ordered": N_("allowed, not yet ordered"),
}
OUTCOME_TEXT = {
    "disconnect": N_("disconnect"),
    "schedule": N_("scheduled"),
    "blocked": N_("blocked"),
}
# Batch counts: the English labels are the keys as they always read ("blocked at dispatch").
COUNT_TEXT = {
    "planned": N_("planned"),
    "created": N_("created"),
    "scheduled": N_("scheduled"),
    "verified": N_("verified"),
    "armed": N_("armed"),
    "blocked_at_dispatch": N_("blocked at dispatch"),
    "cancelled_paid": N_("cancelled paid"),
    "deferred": N_("deferred"),
    "field_orders": N_("field orders"),
    "already_disconnected": N_("already disconnected"),
}
VERDICT_TEXT = {
    "allow": N_("allow"),
    "block": N_("block"),
    "schedule": N_("schedule"),
}
STATE_TEXT = {
    "planned": N_("planned"),
    "noticed": N_("noticed"),
    "warned": N_("warned (T-15)"),
    "instructed": N_("instructed (T)"),
    "ready": N_("ready"),
    "dispatching": N_("dispatching"),
    "verified": N_("verified"),
    "blocked": N_("blocked"),
    "cancelled_paid": N_("cancelled: paid"),
    "cancelled_approved": N_("cancelled: approved"),
    "failed": N_("failed"),
    "field_order": N_("field order"),
    "requested": N_("requested"),
    "armed": N_("armed: press the button"),
    "raised": N_("raised"),
    "accepted": N_("accepted"),
    "assigned": N_("assigned"),
    "open": N_("open"),
    "closed": N_("closed"),
    "cancelled": N_("cancelled"),
    "approved": N_("approved"),
    "rejected": N_("rejected"),
}
EXEMPTION_TEXT = {
    "guarantee": N_("power guarantee (保电)"),
    "humanitarian": N_("humanitarian"),
}
RELAY_TEXT = {
    "open": N_("relay open"),
    "closed": N_("relay closed"),
    "armed": N_("relay armed"),
    "unknown": N_("relay state unknown"),
}
KIND_TEXT = {
    "disconnect": N_("disconnection"),
    "reconnect": N_("reconnection"),
}


def label(words: Mapping[str, str], value: object) -> str:
    """``value`` (a code or enum value) in the reader's language; unknown values as they are."""
    text = str(getattr(value, "value", value))
    found = words.get(text)
    return _(found) if found is not None else text
