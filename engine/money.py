"""Money in yuan: exact decimals with at most 2 places, ASCII digits only, within stated bounds.

One parser for every way an amount enters (the accounts CSV, ``payments record``, the payment
hook), so they refuse the same things with the same sentences: digits other than 0-9 (Python's
``Decimal`` and ``int`` read full-width ``１２３`` and Arabic-Indic ``١٢٣`` as numbers),
exponents (``1e30``), ``NaN``/``Infinity``, more than 2 decimals, and values beyond the
stated maximum (``[payments] max_amount`` / ``max_balance``). The database column is
``NUMERIC(14, 2)``: :data:`COLUMN_LIMIT` is what it can hold, and the configured maxima must
stay below it, so an amount is stored exactly and read back equal (a repeated payment is then
"nothing changed", never a conflict).

Pure: no I/O.
"""

from __future__ import annotations

import re
from decimal import Decimal

from base.errors import InputError
from base.i18n import _

CENT = Decimal("0.01")
COLUMN_LIMIT = Decimal("1e12")  # NUMERIC(14, 2): 12 digits before the point
_PLAIN = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?")


class AmountError(InputError):
    """An amount or balance refused; ``field`` names what it was (``amount``, ``balance``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def parse_yuan(
    text: str,
    *,
    field: str,
    maximum: Decimal,
    limit_name: str,
    allow_negative: bool = False,
    allow_zero: bool = False,
) -> Decimal:
    """``text`` as exact yuan (quantized to fen), or :class:`AmountError` naming ``field``.

    ``maximum`` bounds the absolute value; ``limit_name`` says where it is set (the message
    names it).
    """
    shown = _shown(text)
    value = text.strip()
    if not value:
        raise AmountError(
            field, _("{field} is empty; expected yuan, e.g. 12.50").format(field=field)
        )
    if not value.isascii():
        raise AmountError(
            field,
            _("{field} {value} must be written with the digits 0-9").format(
                field=field, value=shown
            ),
        )
    lowered = value.lower().lstrip("+-")
    if lowered in ("nan", "snan", "inf", "infinity"):
        raise AmountError(
            field,
            _("{field} {value} is not a finite number of yuan").format(field=field, value=shown),
        )
    if _PLAIN.fullmatch(value) is None:
        if "e" in lowered and _PLAIN.fullmatch(lowered.replace("e", "", 1).lstrip("+-")):
            raise AmountError(
                field,
                _("{field} {value} must be a plain decimal number of yuan (no exponent)").format(
                    field=field, value=shown
                ),
            )
        raise AmountError(
            field,
            _("{field} {value} is not a number of yuan (e.g. 12.50)").format(
                field=field, value=shown
            ),
        )
    amount = Decimal(value)
    if abs(amount) > maximum:
        raise AmountError(
            field,
            _("{field} {value} is beyond the maximum of {maximum} yuan ({limit})").format(
                field=field, value=shown, maximum=f"{maximum:,}", limit=limit_name
            ),
        )
    if amount != amount.quantize(CENT):
        raise AmountError(
            field,
            _("{field} {value} has more than 2 decimals (fen)").format(field=field, value=shown),
        )
    if amount < 0 and not allow_negative:
        raise AmountError(field, _positive(field, shown))
    if amount == 0 and not allow_zero:
        raise AmountError(field, _positive(field, shown))
    return amount.quantize(CENT)


def _positive(field: str, shown: str) -> str:
    return _("{field} {value} must be a positive number of yuan").format(field=field, value=shown)


def _shown(text: str, limit: int = 40) -> str:
    """The input quoted for a message, cut short (a 10,000-digit amount is not echoed)."""
    return repr(text if len(text) <= limit else text[:limit] + "...")
