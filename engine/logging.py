"""Operational logs: structlog JSON lines on stderr (separate from the audit trail).

Secrets never reach a log line, by three layers:

- :func:`redact_secrets` replaces the value of any secret-looking key (``password``, ``*_key``)
  in an event with ``***``, so a key passed in an event dict by mistake is not written;
- exceptions are rendered as plain tracebacks **without local variables** (:func:`render_exception`):
  structlog's ``dict_tracebacks`` and rich tracebacks show every frame's locals by default, and
  those hold the hook key, the meter passwords and the audit key;
- :func:`scrub_secret_values` replaces every secret *value* the process has loaded
  (:func:`register_secret`: the hook key, the audit key, API client keys) wherever it appears in
  a rendered string, e.g. an exception message that quoted it.

The formatter never raises: a value that cannot be rendered gives a fallback line naming the
event, instead of losing the event (logging's "--- Logging error ---").
"""

from __future__ import annotations

import json as jsonlib
import logging
import sys
import threading
import traceback
from collections.abc import MutableMapping
from typing import Any

import structlog

SECRET_KEYS = frozenset({"password", "payment_key", "key", "secret", "audit_key", "signature"})
# Shorter values (6-digit meter passwords) would mangle addresses and numbers if replaced
# everywhere; those are kept out of logs by the two other layers.
MIN_SCRUBBED_LENGTH = 8
REDACTED = "***"

_secrets: set[str] = set()
_secrets_lock = threading.Lock()
# The registered values, longest first (what scrub_text replaces, in that order), rebuilt
# when one is registered instead of sorted at every call (four audit records an order).
_secrets_longest_first: tuple[str, ...] = ()


def register_secret(value: str | bytes | None) -> None:
    """Remember a secret value so no log line ever shows it (however it got there)."""
    if value is None:
        return
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    text = text.strip()
    if len(text) >= MIN_SCRUBBED_LENGTH:
        global _secrets_longest_first
        with _secrets_lock:
            _secrets.add(text)
            _secrets_longest_first = tuple(sorted(_secrets, key=len, reverse=True))


def scrub_text(text: str) -> str:
    """``text`` with every registered secret value replaced by ``***``."""
    for secret in _secrets_longest_first:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def _scrub_value(value: Any) -> Any:
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, bytes):
        return scrub_text(value.decode("utf-8", "replace"))
    if isinstance(value, dict):
        return {k: _scrub_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub_value(v) for v in value]
    return value


def redact_secrets(
    _logger: Any, _name: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Replace the value of any secret-looking key with ``***``."""
    for key in list(event):
        if key.lower() in SECRET_KEYS or key.lower().endswith(("_password", "_secret", "_key")):
            event[key] = REDACTED
    return event


def render_exception(
    _logger: Any, _name: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Turn ``exc_info`` into a plain traceback string: file, line, code; never a frame's locals."""
    exc_info = event.pop("exc_info", None)
    if exc_info is None or exc_info is False:
        return event
    if exc_info is True:
        exc_info = sys.exc_info()
    if isinstance(exc_info, BaseException):
        exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
    if isinstance(exc_info, tuple) and len(exc_info) == 3 and exc_info[0] is not None:
        event["exception"] = "".join(traceback.format_exception(*exc_info)).rstrip()
    return event


def scrub_secret_values(
    _logger: Any, _name: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Replace registered secret values inside every string of the event."""
    for key in list(event):
        if not key.startswith("_"):
            event[key] = _scrub_value(event[key])
    return event


class SafeFormatter(structlog.stdlib.ProcessorFormatter):
    """A ProcessorFormatter that never loses an event to a rendering error."""

    def format(self, record: logging.LogRecord) -> str:
        try:
            return scrub_text(super().format(record))
        except Exception as exc:  # the fallback names the event and why it could not render
            try:
                message = record.getMessage() if not isinstance(record.msg, dict) else ""
                event = record.msg.get("event", "") if isinstance(record.msg, dict) else message
            except Exception:
                event = "(unrenderable)"
            return scrub_text(
                jsonlib.dumps(
                    {
                        "event": str(event),
                        "level": record.levelname.lower(),
                        "logger": record.name,
                        "log_render_error": type(exc).__name__,
                    },
                    default=str,
                )
            )


def configure_logging(level: str = "INFO", *, json: bool = True) -> None:
    """Route structlog and stdlib logging to stderr in one format."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_secrets,
    ]
    structlog.configure(
        # Drop an event below the level before any processor formats it (the client logs
        # every frame at debug).
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Not cached: tests swap the processors (structlog.testing.capture_logs).
        cache_logger_on_first_use=False,
    )
    renderer: Any = (
        structlog.processors.JSONRenderer(sort_keys=True, default=str)
        if json
        else structlog.dev.ConsoleRenderer(
            colors=False, exception_formatter=structlog.dev.plain_traceback
        )
    )
    formatter = SafeFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            render_exception,
            scrub_secret_values,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("pymodbus", "apscheduler", "sqlalchemy", "alembic", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
