"""Every public reference frame decodes to its documented meaning; reads re-encode byte-exact."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from protocols.dlt645 import (
    AbnormalReply,
    ControlAction,
    ReadAddressRequest,
    ReadReply,
    ReadRequest,
    RemoteControlReply,
    RemoteControlRequest,
    decode_hex,
    decode_message,
    decode_value,
)
from protocols.dlt645.v1997 import Read1997Reply, Read1997Request
from protocols.errors import NoRequestedData

# A copy of the team's reference file (../shared/reference/dlt645_vectors.json), sources inside.
VECTORS: list[dict[str, Any]] = json.loads(
    Path(__file__).with_name("dlt645_vectors.json").read_text(encoding="utf-8")
)

# The documented meaning of each vector (from its "meaning" field), keyed by its hex.
EXPECTED: dict[str, dict[str, Any]] = {
    "FEFEFEFE68AAAAAAAAAAAA681300DF16": {
        "type": ReadAddressRequest,
        "address": "AAAAAAAAAAAA",
        "control": 0x13,
    },
    "68129078563412681104333334336816": {
        "type": ReadRequest,
        "address": "123456789012",
        "control": 0x11,
        "di": 0x00010000,
    },
    "6812907856341268910833333433AB896745CC16": {
        "type": ReadReply,
        "address": "123456789012",
        "control": 0x91,
        "di": 0x00010000,
        "value": Decimal("123456.78"),
    },
    "680172007200006891083333343333333333E716": {
        "type": ReadReply,
        "address": "000072007201",
        "control": 0x91,
        "di": 0x00010000,
        "value": Decimal("0.00"),
    },
    "68907856341200681104333333335516": {
        "type": ReadRequest,
        "address": "001234567890",
        "control": 0x11,
        "di": 0x00000000,
    },
    "FEFEFEFE680051441811176891063533B33536834516": {
        "type": ReadReply,
        "address": "171118445100",
        "control": 0x91,
        "di": 0x02800002,
        "value": Decimal("50.03"),
    },
    "68032012222065681104333333338D16": {
        "type": ReadRequest,
        "address": "652022122003",
        "control": 0x11,
        "di": 0x00000000,
    },
    "680320122220656891083333333333333333DD16": {
        "type": ReadReply,
        "address": "652022122003",
        "control": 0x91,
        "di": 0x00000000,
        "value": Decimal("0.00"),
    },
    "FEFEFEFE6818201222206568110433323435A416": {
        "type": ReadRequest,
        "address": "652022122018",
        "control": 0x11,
        "di": 0x0201FF00,
    },
    "6803000000000068010244E90316": {
        "type": Read1997Request,
        "address": "000000000003",
        "control": 0x01,
        "di": 0xB611,
    },
    "6803000000000068810444E93334EC16": {
        "type": Read1997Reply,
        "address": "000000000003",
        "control": 0x81,
        "di": 0xB611,
        "value": Decimal("100"),
    },
    "FEFEFEFE68090051050326681C1035333333333333334D348C8C566445CC8216": {
        "type": RemoteControlRequest,
        "address": "260305510009",
        "control": 0x1C,
        "action": ControlAction.TRIP,
        "valid_until": datetime(2099, 12, 31, 23, 59, 59),
        "level": 0x02,
        "password": "000000",
        "operator": "00000000",
        "n2": 0x01,
    },
    "68090051050326689C00F416": {
        "type": RemoteControlReply,
        "address": "260305510009",
        "control": 0x9C,
    },
    "6812907856341268D101358D16": {
        "type": AbnormalReply,
        "address": "123456789012",
        "control": 0xD1,
        "error": "no_requested_data",
        "exception": NoRequestedData,
    },
    "FEFEFEFE68080202412200681104353733372A16": {
        "type": ReadRequest,
        "address": "002241020208",
        "control": 0x11,
        "di": 0x04000402,
    },
}


def test_every_vector_has_an_expectation() -> None:
    assert {v["hex"] for v in VECTORS} == set(EXPECTED)


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v["hex"][:24])
def test_vector_decodes_to_its_meaning(vector: dict[str, Any]) -> None:
    want = EXPECTED[vector["hex"]]
    frame = decode_hex(vector["hex"])
    assert frame.address == want["address"]
    assert frame.control == want["control"]
    message = decode_message(frame)
    assert isinstance(message, want["type"])
    if "di" in want:
        assert message.di == want["di"]
    if "value" in want:
        if isinstance(message, Read1997Reply):
            assert message.value == want["value"]
        else:
            assert decode_value(message.di, message.raw) == want["value"]
    if "action" in want:
        assert message.action is want["action"]
        assert message.valid_until == want["valid_until"]
        assert message.credentials.level == want["level"]
        assert message.credentials.password == want["password"]
        assert message.credentials.operator == want["operator"]
        assert message.n2 == want["n2"]
    if "error" in want:
        assert want["error"] in message.error_names
        assert isinstance(message.exception(), want["exception"])


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v["hex"][:24])
def test_vector_re_encodes_byte_exact(vector: dict[str, Any]) -> None:
    """Every message re-encodes to the same bytes, ignoring the FE preamble."""
    raw = bytes.fromhex(vector["hex"])
    body = raw.lstrip(b"\xfe")
    message = decode_message(decode_hex(vector["hex"]))
    assert message.to_frame().encode() == body
    preamble = len(raw) - len(body)
    assert message.to_frame().encode(preamble) == raw


def test_read_requests_encode_from_scratch() -> None:
    """Read requests built from (address, DI) alone match the published bytes."""
    for vector in VECTORS:
        want = EXPECTED[vector["hex"]]
        if want["type"] is ReadRequest:
            built = ReadRequest(want["address"], want["di"]).to_frame().encode()
            assert built == bytes.fromhex(vector["hex"]).lstrip(b"\xfe")
