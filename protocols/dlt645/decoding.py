"""Frame -> typed message: one table of decoders for every function the package knows.

Each message module exports a ``DECODERS`` table keyed by ``(function, is_reply)``: the 2007
base set (:mod:`.messages`), 15H..1BH (:mod:`.extra_messages`) and the 1997 reads
(:mod:`.v1997`). Modules loaded later (the ESAM security module's 03H, a vendor extension)
add theirs with :func:`register_decoder`. This module sits above all of them, so none of
them needs another's table (and none imports this one).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from protocols.dlt645 import codes, extra_messages, messages, v1997
from protocols.dlt645.frame import Frame
from protocols.dlt645.messages import REPLY, Message, decode_abnormal
from protocols.errors import FrameStructureError

Decoder = Callable[[Frame], Any]

# Decoders added at run time (see register_decoder); they win over the built-in tables.
REGISTERED: dict[tuple[int, bool], Decoder] = {}

_KEY_MASK = REPLY | codes.FUNCTION_MASK  # direction + function: the follow-up bit is data
_TABLE: dict[int, Decoder] = {}


def register_decoder(function: int, is_reply: bool, decoder: Decoder) -> None:
    """Make :func:`decode_message` turn frames of ``function`` into ``decoder(frame)``."""
    REGISTERED[(function, is_reply)] = decoder
    _TABLE.clear()


def reload_decoders() -> None:
    """Forget the merged decoder table (after replacing or removing a registered decoder)."""
    _TABLE.clear()


def decode_message(frame: Frame) -> Message:
    """Turn a frame into its typed message.

    Raises:
        FrameError: the data does not fit the function's layout.
        FrameStructureError: an unknown function code (the frame itself stays usable).
    """
    control = frame.control
    if control & codes.ABNORMAL:
        return decode_abnormal(frame)
    decoder = _TABLE.get(control & _KEY_MASK)
    if decoder is None:  # a table may have gained an entry since the last merge
        decoder = _build_table().get(control & _KEY_MASK)
    if decoder is None:
        direction = "reply" if control & REPLY else "request"
        raise FrameStructureError(
            f"no {direction} message is defined for function {control & codes.FUNCTION_MASK:02X}H"
        )
    return decoder(frame)


def has_message(frame: Frame) -> bool:
    """Whether :func:`decode_message` knows a message type for this frame's function."""
    key = frame.control & _KEY_MASK
    return bool(frame.control & codes.ABNORMAL) or key in _TABLE or key in _build_table()


def _build_table() -> dict[int, Decoder]:
    # Later tables win: the 2007 base set over 1997's, registered decoders over all.
    for table in (v1997.DECODERS, extra_messages.DECODERS, messages.DECODERS, REGISTERED):
        for (function, is_reply), decoder in table.items():
            _TABLE[function | (REPLY if is_reply else 0)] = decoder
    return _TABLE
