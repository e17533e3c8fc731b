"""The root of meterctl's error tree and the two errors every layer raises.

Every error meterctl raises on purpose descends from :class:`MeterctlError`, and the leaves
also inherit the matching builtin so callers that only know Python's own exceptions still
catch them (python-can's ``CanTimeoutError(CanError, TimeoutError)``)::

    MeterctlError
    ├── ConfigError(ValueError)     bad config file, key, type or value
    ├── InputError(ValueError)      bad command-line or file input (CSV row, hex, option)
    ├── protocols.errors ...        wire errors: frames, links, meter refusals
    └── engine ...                  store and policy errors (engine.store.errors)

The wire errors live in :mod:`protocols.errors`; this module holds only what the policies,
the simulator and the engine share without sharing a wire.
"""

from __future__ import annotations


class MeterctlError(Exception):
    """Root of every error meterctl raises deliberately."""


class ConfigError(MeterctlError, ValueError):
    """The configuration (file, key, type or value) is wrong; the message names the key."""


class InputError(MeterctlError, ValueError):
    """User input (an option, a CSV row, a hex string) is wrong; the message says where."""
