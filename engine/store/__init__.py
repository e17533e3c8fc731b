"""Repository functions over :mod:`engine.db.models`: each change is audited in its session.

Functions take an open :class:`~sqlmodel.Session` (from :func:`engine.db.transaction`) so
callers compose several changes into one transaction; :func:`load_cases` opens its own
read-only session.
"""

from engine.store.accounts import accounts_in_arrears, arrears_threshold, get_account
from engine.store.approvals import approve_disconnect
from engine.store.cases import load_cases
from engine.store.errors import Refused, StaleOrder, UnknownAccount, UnknownRecord
from engine.store.exemptions import decide_exemption, list_exemptions, request_exemption
from engine.store.notices import issue_notice, issue_notices_in_arrears, record_delivery
from engine.store.orders import get_order, move_order, terminate_order

__all__ = [
    "Refused",
    "StaleOrder",
    "UnknownAccount",
    "UnknownRecord",
    "accounts_in_arrears",
    "approve_disconnect",
    "arrears_threshold",
    "decide_exemption",
    "get_account",
    "get_order",
    "issue_notice",
    "issue_notices_in_arrears",
    "list_exemptions",
    "load_cases",
    "move_order",
    "record_delivery",
    "request_exemption",
    "terminate_order",
]
