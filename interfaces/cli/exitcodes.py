"""Exit codes shared by every command (../shared/CONTRACTS.md)."""

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    UNEXPECTED = 1
    BAD_INPUT = 2  # bad input or usage: names the row, field, frame or option
    PARTIAL = 3  # some orders failed or became field orders
    REFUSED = 4  # role, four eyes, batch limit, missing confirmation
