"""An audit record's payload text: the fast paths of engine.audit (scrub without a call per
plain value, a prebuilt JSON encoder, one-shot HMAC) give exactly the text and hashes of the
straightforward code they replaced, which is written out here as the reference."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections import OrderedDict
from collections.abc import Mapping
from datetime import UTC, date, datetime
from enum import Enum, StrEnum
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from engine import audit
from engine.logging import register_secret, scrub_text


def _reference_scrub(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {
            str(k): ("***" if audit._is_secret_name(str(k)) else _reference_scrub(v))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_reference_scrub(v) for v in value]
    return value


def _reference_json(value: Any) -> str:
    return json.dumps(
        value,
        default=audit._json_default,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )


class _Colour(StrEnum):
    RED = "red"


class _Level(Enum):
    HIGH = 3


_KEYS = st.one_of(
    st.sampled_from(
        ["order_id", "password", "meter_password", "hook_key", "Token", "secret", "kind", "key"]
    ),
    st.text(max_size=8),
    st.integers(-5, 5),
    st.just(_Colour.RED),
)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=12),
    st.just(_Colour.RED),
    st.just(_Level.HIGH),
    st.decimals(allow_nan=False, allow_infinity=False, places=2),
    st.datetimes(timezones=st.just(UTC)),
    st.dates().map(lambda d: date(d.year, d.month, d.day)),
    st.binary(max_size=4),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(_KEYS, inner, max_size=5),
        st.dictionaries(_KEYS, inner, max_size=5).map(OrderedDict),
    ),
    max_leaves=20,
)


@given(st.dictionaries(_KEYS, _VALUES, max_size=8))
def test_scrub_and_canonical_json_equal_the_reference(payload: dict[Any, Any]) -> None:
    scrubbed = audit.scrub(payload)
    assert scrubbed == _reference_scrub(payload)
    assert audit.canonical_json(scrubbed) == _reference_json(_reference_scrub(payload))
    if payload:  # the whole payload text append writes (an empty payload is "{}")
        assert scrub_text(audit.canonical_json(audit.scrub(payload))) == scrub_text(
            _reference_json(_reference_scrub(dict(payload)))
        )


@given(st.binary(min_size=1, max_size=64), st.text(max_size=64))
def test_the_one_shot_hmac_is_hmac_sha256(key: bytes, text: str) -> None:
    message = text.encode("utf-8")
    assert audit._hmac(key, message) == hmac.new(key, message, hashlib.sha256).hexdigest()


def test_a_flat_payload_is_scrubbed_of_secret_keys_and_values() -> None:
    register_secret("s3cr3t-value-for-the-payload-test")
    scrubbed = audit.scrub(
        {
            "order_id": 1,
            "meter_password": "123456",
            "error": "bad s3cr3t-value-for-the-payload-test",
        }
    )
    text = scrub_text(audit.canonical_json(scrubbed))
    assert text == '{"error":"bad ***","meter_password":"***","order_id":1}'


def test_scrub_text_replaces_longer_secrets_first() -> None:
    register_secret("zq7f3a-secret")
    register_secret("zq7f3a-secret-and-more")
    assert scrub_text("x zq7f3a-secret-and-more y zq7f3a-secret") == "x *** y ***"


def test_a_record_s_hash_is_the_keyed_hash_of_its_body() -> None:
    at = datetime(2026, 12, 7, 1, 2, 3, tzinfo=UTC)
    body = audit._record_body(7, at, "ops", "order.moved", "12", '{"a":1}')
    expected = hmac.new(
        b"k", b"0" * 64 + b"\n" + _reference_json(body).encode("utf-8"), hashlib.sha256
    ).hexdigest()
    assert audit._digest(b"k", "0" * 64, body) == expected
    assert (
        audit._record_digest(b"k", "0" * 64, 7, at, "ops", "order.moved", "12", '{"a":1}')
        == expected
    )
    assert audit._head_mac(b"k", 7, "ab") == (
        hmac.new(b"k", b"head|7|ab", hashlib.sha256).hexdigest()
    )


def test_a_flat_payload_is_scrubbed_in_one_call(monkeypatch: Any) -> None:
    """The four records of every order have flat payloads: no call per value."""
    calls = []
    plain = audit.scrub

    def counted(value: Any) -> Any:
        calls.append(value)
        return plain(value)

    monkeypatch.setattr(audit, "scrub", counted)
    payload = {"order_id": 1, "kind": "disconnect", "from": "ready", "version": 2, "error": None}
    assert audit.scrub(payload) == payload
    assert len(calls) == 1
    calls.clear()
    assert audit.scrub({"reasons": ["arrears", "notice"]}) == {"reasons": ["arrears", "notice"]}
    assert len(calls) == 2  # the dict, its list; not each name in it
