"""The wire errors: frames, links and meters that say no.

They descend from :class:`base.errors.MeterctlError` (the root every layer shares, beside
``ConfigError`` and ``InputError``), and the leaves also inherit the matching builtin::

    MeterctlError (base.errors)
    ├── FrameError(ValueError)                bytes that are not a valid frame
    │   ├── FrameChecksumError
    │   ├── FrameLengthError
    │   └── FrameStructureError               missing 68H/16H, bad address digits, short data
    ├── LinkError(ConnectionError)            the path to the meter failed
    │   ├── LinkTimeout(TimeoutError)         no (complete) reply before the deadline
    │   ├── LinkClosed                        the gateway or port went away
    │   └── GatewayError                      a concentrator/gateway said no (busy, denied)
    ├── UnexpectedReply                       a well-formed frame that does not answer our request
    │   └── AddressMismatch                   the reply came from another meter
    └── MeterRefused                          abnormal reply (C|40H) with its error word
        ├── PasswordRefused                   bit 2: password wrong / unauthorised
        ├── NoRequestedData                   bit 1: no requested data
        ├── BaudRateRefused                   bit 3
        ├── TooManyTimeZones / TooManyDailySlots / TooManyTariffs
        └── OtherMeterError                   bit 0 or an unnamed bit

Protocol-specific classes live here rather than in ``protocols.dlt645`` because the
Modbus driver and the concentrator link raise the same ones: the engine branches on
"no reply" vs "meter said no" whatever the wire.
"""

from __future__ import annotations

from base.errors import MeterctlError


class FrameError(MeterctlError, ValueError):
    """Bytes that do not form a valid frame."""


class FrameChecksumError(FrameError):
    """The checksum byte does not match the sum of the frame."""


class FrameLengthError(FrameError):
    """The length byte is out of range or disagrees with the bytes present."""


class FrameStructureError(FrameError):
    """A delimiter, address digit or data field is malformed."""


class AddressNotBcd(FrameStructureError):
    """An address byte is neither BCD nor the AAH wildcard (a deviation, not a framing error)."""


class LinkError(MeterctlError, ConnectionError):
    """The link to the meter (serial port, gateway, concentrator) failed."""


class LinkTimeout(LinkError, TimeoutError):
    """No complete reply arrived before the deadline."""


class LinkClosed(LinkError):
    """The port or gateway connection is closed or was dropped."""


class GatewayError(LinkError):
    """A gateway or concentrator refused or failed to forward the frame."""


class UnexpectedReply(MeterctlError):
    """A valid frame arrived that does not answer the request that was sent."""


class AddressMismatch(UnexpectedReply):
    """The reply came from a different meter address than the one addressed."""


class MeterRefused(MeterctlError):
    """The meter answered with an abnormal reply (control code | 40H).

    Attributes:
        error_word: the raw error information word (ERR, or the 2-byte control error word).
        errors: the names of the bits that are set, most specific first.
        function: the function code of the refused request.
    """

    def __init__(self, message: str, *, error_word: int, errors: tuple[str, ...], function: int):
        super().__init__(message)
        self.error_word = error_word
        self.errors = errors
        self.function = function


class PasswordRefused(MeterRefused):
    """Error bit 2: wrong password or not authorised (密码错/未授权)."""


class NoRequestedData(MeterRefused):
    """Error bit 1: the meter does not hold the requested data (无请求数据)."""


class BaudRateRefused(MeterRefused):
    """Error bit 3: the communication rate cannot be changed (通信速率不能更改)."""


class TooManyTimeZones(MeterRefused):
    """Error bit 4: too many year time zones (年时区数超)."""


class TooManyDailySlots(MeterRefused):
    """Error bit 5: too many daily time slots (日时段数超)."""


class TooManyTariffs(MeterRefused):
    """Error bit 6: too many tariffs (费率数超)."""


class OtherMeterError(MeterRefused):
    """Error bit 0 (other error, 其他错误) or a bit the standard does not name."""
