"""Security modules: the SM4 stand-in, the 03H/98H frames, and both control paths end to end."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from base.errors import ConfigError
from engine.switching.drivers import BusPool, CloseMode, Dlt645Driver
from protocols.client.dlt645 import Dlt645Client
from protocols.dlt645.codes import ControlAction, FunctionCode
from protocols.dlt645.decoding import decode_message
from protocols.dlt645.frame import decode_frame
from protocols.dlt645.messages import Credentials, RemoteControlRequest
from protocols.dlt645.security import (
    AuthenticationChallenge,
    AuthenticationRefused,
    AuthenticationReply,
    AuthenticationRequest,
    MeterSession,
    PlaintextModule,
    SealedControlRequest,
    SecurityKeys,
    SecurityModule,
    SoftwareEsam,
    SoftwareSecurityModule,
    load_security_module,
    send_control,
    sm4_encrypt_block,
)
from protocols.errors import PasswordRefused
from protocols.links import open_link
from simulator.fleet import Fleet
from simulator.fleetfile import MeterSpec
from simulator.state import RelayState

METER = "000000000042"
DEADLINE = datetime(2030, 5, 6, 7, 8, 9)
OTHER_KEYS = SecurityKeys(bytes(range(16)), bytes(range(16, 32)))


def test_sm4_is_the_real_cipher() -> None:
    # GB/T 32907-2016 appendix A example 1.
    key = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
    assert sm4_encrypt_block(key, key).hex().upper() == "681EDF34D206965E86B3E94F536E4246"


async def _session(module: SoftwareSecurityModule, esam: SoftwareEsam) -> MeterSession | None:
    challenge = await module.authenticate(METER)
    return esam.authenticate(AuthenticationRequest(METER, "00000001", challenge))


async def test_authenticate_seal_and_open() -> None:
    module, esam = SoftwareSecurityModule(), SoftwareEsam(METER)
    session = await _session(module, esam)
    assert session is not None and session.esam_serial == esam.serial
    sealed = await module.seal_control(
        METER, ControlAction.TRIP, DEADLINE, session=session, operator="00000001"
    )
    assert len(sealed) == 20
    opened = esam.open_control(SealedControlRequest(METER, "00000001", sealed))
    assert opened is not None
    assert (opened.action, opened.n2, opened.valid_until) == (0x1A, 0, DEADLINE)


async def test_wrong_keys_fail_authentication() -> None:
    esam = SoftwareEsam(METER)
    assert await _session(SoftwareSecurityModule(OTHER_KEYS), esam) is None
    assert not esam.authenticated


async def test_mac_binds_session_operator_and_meter() -> None:
    module, esam = SoftwareSecurityModule(), SoftwareEsam(METER)

    async def sealed_for(operator: str = "00000001") -> bytes:
        session = await _session(module, esam)
        return await module.seal_control(
            METER, ControlAction.TRIP, DEADLINE, session=session, operator=operator
        )

    sealed = await sealed_for()
    tampered = bytes((sealed[0] ^ 1,)) + sealed[1:]
    assert esam.open_control(SealedControlRequest(METER, "00000001", tampered)) is None
    # The session was consumed by the failed attempt: the untouched command is now a replay.
    assert esam.open_control(SealedControlRequest(METER, "00000001", sealed)) is None
    sealed = await sealed_for()
    assert esam.open_control(SealedControlRequest(METER, "00000002", sealed)) is None
    sealed = await sealed_for()
    assert esam.open_control(SealedControlRequest(METER, "00000001", sealed)) is not None
    assert esam.open_control(SealedControlRequest(METER, "00000001", sealed)) is None  # replay


def test_security_frames_round_trip() -> None:
    challenge = AuthenticationChallenge(b"\x01" * 8, bytes(range(8)), b"\x00\x00" + bytes(6))
    request = AuthenticationRequest(METER, "12345678", challenge)
    frame = decode_frame(request.to_frame().encode())
    assert frame.function == FunctionCode.SECURITY and len(frame.data) == 32
    assert frame.data[:4] == bytes.fromhex("FF000007")  # DI 070000FF, low byte first
    assert decode_message(frame) == request
    reply = AuthenticationReply(METER, MeterSession(b"\x0a\x0b\x0c\x0d", bytes(range(8))))
    assert decode_message(decode_frame(reply.to_frame().encode())) == reply
    sealed = SealedControlRequest(METER, "00000001", bytes(range(20)))
    wire = decode_frame(sealed.to_frame().encode())
    assert wire.data[0] == 0x98 and len(wire.data) == 28
    assert SealedControlRequest.from_frame(wire) == sealed


async def test_plaintext_module_builds_the_plain_1ch_data() -> None:
    credentials = Credentials(4, "123456", "00000009")
    module = PlaintextModule(credentials)
    assert isinstance(module, SecurityModule)
    data = await module.seal_control(METER, ControlAction.DIRECT_CLOSE, DEADLINE)
    expected = RemoteControlRequest(METER, credentials, ControlAction.DIRECT_CLOSE, DEADLINE)
    assert data == expected.to_frame().data
    assert "123456" not in repr(module)


def vendor_factory(key_file: Any) -> SoftwareSecurityModule:
    """A stand-in 'vendor' factory for load_security_module."""
    return SoftwareSecurityModule(OTHER_KEYS)


def test_load_security_module(tmp_path: Path) -> None:
    assert isinstance(load_security_module("software"), SoftwareSecurityModule)
    keys = tmp_path / "keys.toml"
    keys.write_text(f'identity = "{"11" * 16}"\ncontrol = "{"22" * 16}"\n', encoding="utf-8")
    module = load_security_module("software", keys)
    assert isinstance(module, SoftwareSecurityModule)
    assert module.keys.identity == b"\x11" * 16
    assert "11111111" not in repr(module) and "11111111" not in repr(module.keys)
    vendor = load_security_module("tests.protocols.test_security:vendor_factory")
    assert isinstance(vendor, SoftwareSecurityModule) and vendor.keys == OTHER_KEYS
    for spec in ("vendor-without-factory", "no.such.module:make"):
        with pytest.raises(ConfigError, match="security module"):
            load_security_module(spec)
    keys.write_text('identity = "zz"\ncontrol = "22"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="32 hex digits"):
        load_security_module("software", keys)


# --- end to end over TCP: an ESAM meter in the simulator ------------------------------------


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    specs = [
        MeterSpec(
            METER,
            "200000000042",
            "socket://127.0.0.1:0",
            balance=Decimal("-5"),
            passwords={2: "000000"},
            security="encrypted",
        )
    ]
    with Fleet(specs, time_scale=0) as running:
        yield running


def deadline_for(fleet: Fleet) -> datetime:
    return fleet.meter_time(METER) + timedelta(minutes=5)


async def test_plaintext_trip_refused_encrypted_trip_verified(fleet: Fleet) -> None:
    client = Dlt645Client(open_link(fleet.link_of(METER)), margin_s=0.2)
    async with client.link:
        with pytest.raises(PasswordRefused):
            await client.control(
                METER, ControlAction.TRIP, Credentials(2, "000000"), deadline_for(fleet)
            )
        assert fleet.relay(METER) is RelayState.CLOSED
        await send_control(
            client,
            SoftwareSecurityModule(),
            METER,
            ControlAction.TRIP,
            deadline_for(fleet),
            operator="00000007",
        )
        word = await client.read_relay_state(METER)
    assert word["relay_open"] is True and word["relay_command_open"] is True
    assert fleet.events(METER, "identity_auth", result="ok")
    assert fleet.events(METER, "command", action="trip", result="ok", level="98")
    assert fleet.events(METER, "command", reason="plaintext_refused")


async def test_plaintext_close_is_still_accepted_by_an_esam_meter(fleet: Fleet) -> None:
    fleet.update(METER, relay=RelayState.OPEN)
    client = Dlt645Client(open_link(fleet.link_of(METER)), margin_s=0.2)
    async with client.link:
        await send_control(
            client,
            PlaintextModule(Credentials(2, "000000")),
            METER,
            ControlAction.DIRECT_CLOSE,
            deadline_for(fleet),
            operator="00000000",
        )
    assert fleet.relay(METER) is RelayState.CLOSED


async def test_wrong_keys_are_a_named_authentication_refusal(fleet: Fleet) -> None:
    client = Dlt645Client(open_link(fleet.link_of(METER)), margin_s=0.2)
    async with client.link:
        with pytest.raises(AuthenticationRefused) as caught:
            await send_control(
                client,
                SoftwareSecurityModule(OTHER_KEYS),
                METER,
                ControlAction.TRIP,
                deadline_for(fleet),
                operator="00000007",
            )
    assert caught.value.errors == ("identity_authentication_failed",)
    assert fleet.relay(METER) is RelayState.CLOSED


async def test_sealed_command_without_authentication_is_refused(fleet: Fleet) -> None:
    module = SoftwareSecurityModule()
    session = MeterSession(b"\x00" * 4, SoftwareEsam(METER).serial)
    sealed = await module.seal_control(
        METER, ControlAction.TRIP, deadline_for(fleet), session=session, operator="00000001"
    )
    client = Dlt645Client(open_link(fleet.link_of(METER)), margin_s=0.2)
    async with client.link:
        with pytest.raises(PasswordRefused):
            await client.request(SealedControlRequest(METER, "00000001", sealed))
    assert fleet.events(METER, "command", reason="not_authenticated")
    assert fleet.relay(METER) is RelayState.CLOSED


async def test_bus_pool_picks_the_path_per_meter(fleet: Fleet) -> None:
    pool = BusPool()
    try:
        plain = await pool.driver(
            protocol="dlt645-2007",
            link_url=fleet.link_of(METER),
            address=METER,
            credentials=Credentials(2, "000000"),
        )
        with pytest.raises(PasswordRefused):
            await plain.trip(deadline_for(fleet))
        secure = await pool.driver(
            protocol="dlt645-2007",
            link_url=fleet.link_of(METER),
            address=METER,
            credentials=Credentials(2, "000000"),
            security="encrypted",
        )
        assert isinstance(secure, Dlt645Driver) and secure.security == "encrypted"
        await secure.trip(deadline_for(fleet))
        assert (await secure.read_relay()).open
        await secure.close(CloseMode.DIRECT, deadline_for(fleet))
        assert not (await secure.read_relay()).open
    finally:
        await pool.close()
