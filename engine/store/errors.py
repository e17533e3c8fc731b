"""What the store refuses, as errors the CLI maps onto exit codes (2 bad input, 4 refused)."""

from __future__ import annotations

from base.errors import InputError, MeterctlError


class UnknownAccount(InputError):
    """No account with this number (the message names it)."""

    def __init__(self, account_no: str) -> None:
        super().__init__(f"unknown account {account_no!r}")
        self.account_no = account_no


class UnknownRecord(InputError):
    """No exemption, order or other record with this id."""


class Refused(MeterctlError, PermissionError):
    """An action refused by a rule of control (four eyes, a protected state); exit 4.

    ``action`` names what was attempted, for the audit record of the refusal.
    """

    def __init__(self, message: str, *, action: str) -> None:
        super().__init__(message)
        self.action = action


class StaleOrder(MeterctlError):
    """Another worker moved the order first (compare-and-set on ``version`` failed)."""
