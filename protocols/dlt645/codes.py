"""Function codes, control-byte bits, remote-control actions and error bits of DL/T 645-2007."""

from __future__ import annotations

from enum import IntEnum, IntFlag


class FunctionCode(IntEnum):
    """D4..D0 of the control byte (DL/T 645-2007 §4.1)."""

    SECURITY = 0x03  # SGCC ESAM identity authentication (extension)
    BROADCAST_TIME = 0x08
    READ = 0x11
    READ_FOLLOW_UP = 0x12
    READ_ADDRESS = 0x13
    WRITE = 0x14
    WRITE_ADDRESS = 0x15
    FREEZE = 0x16
    CHANGE_BAUD = 0x17
    CHANGE_PASSWORD = 0x18
    CLEAR_DEMAND = 0x19
    CLEAR_METER = 0x1A
    CLEAR_EVENT = 0x1B
    REMOTE_CONTROL = 0x1C  # 跳合闸、报警、保电


class Function1997(IntEnum):
    """DL/T 645-1997 function codes (2-byte identifiers)."""

    READ = 0x01
    READ_FOLLOW_UP = 0x02
    REREAD = 0x03
    WRITE = 0x04
    BROADCAST_TIME = 0x08
    WRITE_ADDRESS = 0x0A
    CHANGE_BAUD = 0x0C
    CHANGE_PASSWORD = 0x0F
    CLEAR_DEMAND = 0x10


# Control byte bits.
DIRECTION_REPLY = 0x80  # D7: 1 = slave to master
ABNORMAL = 0x40  # D6: 1 = abnormal (refusal) reply
FOLLOW_UP = 0x20  # D5: 1 = more frames follow
FUNCTION_MASK = 0x1F


class ControlAction(IntEnum):
    """N1 of a remote-control (1CH) command."""

    TRIP = 0x1A  # 跳闸
    CLOSE_ALLOWED = 0x1B  # 合闸允许: the customer must press the button
    DIRECT_CLOSE = 0x1C  # 直接合闸 (SGCC-era meters)
    ALARM = 0x2A  # 报警
    ALARM_RELEASE = 0x2B  # 报警解除
    GUARANTEE = 0x3A  # 保电: trip commands are refused while on
    GUARANTEE_RELEASE = 0x3B  # 保电解除


class ErrorBits(IntFlag):
    """The error information word ERR of an abnormal reply (L=1)."""

    OTHER = 0x01  # 其他错误
    NO_DATA = 0x02  # 无请求数据
    PASSWORD = 0x04  # 密码错/未授权
    BAUD = 0x08  # 通信速率不能更改
    TIME_ZONES = 0x10  # 年时区数超
    DAILY_SLOTS = 0x20  # 日时段数超
    TARIFFS = 0x40  # 费率数超
    RESERVED = 0x80


ERROR_NAMES: dict[int, str] = {
    ErrorBits.PASSWORD: "password_error",
    ErrorBits.NO_DATA: "no_requested_data",
    ErrorBits.BAUD: "baud_rate_unchangeable",
    ErrorBits.TIME_ZONES: "too_many_time_zones",
    ErrorBits.DAILY_SLOTS: "too_many_daily_slots",
    ErrorBits.TARIFFS: "too_many_tariffs",
    ErrorBits.OTHER: "other_error",
    ErrorBits.RESERVED: "reserved_bit7",
}

# Bit order for picking the exception class when several bits are set: the most specific
# (and most actionable) first; "other" last.
ERROR_PRIORITY: tuple[ErrorBits, ...] = (
    ErrorBits.PASSWORD,
    ErrorBits.NO_DATA,
    ErrorBits.BAUD,
    ErrorBits.TIME_ZONES,
    ErrorBits.DAILY_SLOTS,
    ErrorBits.TARIFFS,
    ErrorBits.RESERVED,
    ErrorBits.OTHER,
)
