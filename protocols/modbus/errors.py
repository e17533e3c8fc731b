"""Modbus-specific leaves of the project's error tree (``protocols.errors``).

A Modbus device that answers with an *exception response* (function code | 80H) has
said no: that is a :class:`ModbusExceptionResponse`, a :class:`MeterRefused`.

A gateway that answers for a device that is not there (exception 0AH "gateway path
unavailable" or 0BH "gateway target device failed to respond") has *not* heard from
the meter: on RS-485 an absent meter is silent, and the gateway merely says so out
loud. That is :class:`ModbusNoSuchDevice`, a :class:`LinkTimeout`, so the engine
treats it exactly like silence (read before any resend), never as a refusal.
"""

from __future__ import annotations

from enum import IntEnum

from protocols.errors import LinkTimeout, MeterRefused


class ModbusExceptionCode(IntEnum):
    """Exception codes of the Modbus application protocol (V1.1b3 §7)."""

    ILLEGAL_FUNCTION = 0x01
    ILLEGAL_DATA_ADDRESS = 0x02
    ILLEGAL_DATA_VALUE = 0x03
    DEVICE_FAILURE = 0x04
    ACKNOWLEDGE = 0x05
    DEVICE_BUSY = 0x06
    NEGATIVE_ACKNOWLEDGE = 0x07
    MEMORY_PARITY_ERROR = 0x08
    GATEWAY_PATH_UNAVAILABLE = 0x0A
    GATEWAY_NO_RESPONSE = 0x0B


#: Exception codes that mean "the gateway could not reach the device" (no meter reply).
GATEWAY_ABSENT_CODES = frozenset(
    {ModbusExceptionCode.GATEWAY_PATH_UNAVAILABLE, ModbusExceptionCode.GATEWAY_NO_RESPONSE}
)


def exception_code_name(code: int) -> str:
    """Snake-case name of an exception code ("device_busy"), or "exception_0x.." if unnamed."""
    try:
        return ModbusExceptionCode(code).name.lower()
    except ValueError:
        return f"exception_0x{code:02x}"


class ModbusExceptionResponse(MeterRefused):
    """The device answered a request with a Modbus exception response.

    Attributes:
        exception_code: the raw exception code (``error_word`` holds the same value).
        code_name: its name, e.g. ``"device_busy"`` (also ``errors[0]``).
        device_id: the device that refused.
    """

    def __init__(self, *, device_id: int, function: int, exception_code: int) -> None:
        name = exception_code_name(exception_code)
        super().__init__(
            f"Modbus device {device_id} refused function 0x{function:02x}: "
            f"{name} (0x{exception_code:02x})",
            error_word=exception_code,
            errors=(name,),
            function=function,
        )
        self.exception_code = exception_code
        self.code_name = name
        self.device_id = device_id


class ModbusNoSuchDevice(LinkTimeout):
    """A gateway reported that no device with this id answered on its bus.

    A :class:`LinkTimeout`: the meter itself said nothing.
    """

    def __init__(self, *, device_id: int, function: int, exception_code: int) -> None:
        super().__init__(
            f"no Modbus meter {device_id} on the bus: the gateway answered "
            f"{exception_code_name(exception_code)} (0x{exception_code:02x}) "
            f"to function 0x{function:02x}"
        )
        self.device_id = device_id
        self.function = function
        self.exception_code = exception_code
