"""Modbus relay meters: register map, link URLs, errors and the async driver.

Only :mod:`protocols.modbus.client` imports pymodbus; the rest is pure.
"""

from __future__ import annotations

from protocols.modbus.client import ModbusMeterClient, ModbusRelayReading
from protocols.modbus.errors import (
    ModbusExceptionCode,
    ModbusExceptionResponse,
    ModbusNoSuchDevice,
)
from protocols.modbus.registers import parse_device_id
from protocols.modbus.url import SCHEMES, ModbusLinkSpec, parse_modbus_url

__all__ = [
    "SCHEMES",
    "ModbusExceptionCode",
    "ModbusExceptionResponse",
    "ModbusLinkSpec",
    "ModbusMeterClient",
    "ModbusNoSuchDevice",
    "ModbusRelayReading",
    "parse_device_id",
    "parse_modbus_url",
]
