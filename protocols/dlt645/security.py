"""Control commands through a security module: plaintext (PA 02/04) or encrypted (PA 98H).

State Grid cost-control meters (with an ESAM chip) refuse a plaintext trip (DCH, ERR 04H).
The encrypted path is two exchanges, the cryptography done by a *security module* (the
head-end's 密码机 / 加密机, a hardware device with a vendor interface)::

    1. 03H identity authentication (身份认证), DI 070000FF
       master → meter: DI C0..C3 | cipher1 (8) | random1 (8) | diversification factor (8)
       meter  → master 83H: DI | random2 (4) | ESAM serial number (8)
       refusal: C3H with the 2-byte security error word SERR (bit 3: authentication failed)
    2. 1CH remote control with PA = 98H
       master → meter: 98 P0 P1 P2 | C0..C3 | ciphertext of N1 N2 N3..N8 (16) | MAC (4)
       meter  → master 9CH (L = 0), or DCH ERR 04H (MAC wrong, no valid authentication)

Multi-byte security fields travel low byte first (reversed), as the meter reverses them
before handing them to its ESAM (caokx/3jiliang App/Dl645_ICEsam.c ``fnICEsam_RemoteControl``;
``fnICEsam_Authorization`` takes cipher1, random1 and the factor, then reads a 4-byte
random2; the 03H reply is random2 + the 8-byte ESAM serial, per the SGCC 密码机 interface
notes). The meter accepts a 98H command only after an authentication: random2 binds the
MAC to that session, which ends with the command (one authentication per command here).

:class:`SecurityModule` is the interface a vendor module implements (two async calls; a
real one talks to the 密码机 over its network API). :class:`SoftwareSecurityModule` is a
**stand-in** for tests and the simulator: the same message flow built on SM4 (GB/T 32907,
from ``cryptography``) with key diversification, a CBC-MAC bound to random2 and public test
keys. It is *not* the SGCC algorithm set (whose key-derivation details are not public) and
must not be used against real meters. :class:`SoftwareEsam` is the meter side of the same
stand-in, used by the simulator. :class:`PlaintextModule` is the plaintext path (PA 02/04,
the password from the secrets file) behind the same interface.
"""

from __future__ import annotations

import importlib
import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from base.errors import ConfigError
from base.i18n import N_, Msg
from protocols.dlt645.codes import ControlAction, FunctionCode
from protocols.dlt645.decoding import register_decoder
from protocols.dlt645.frame import Frame, address_to_wire
from protocols.dlt645.messages import (
    Credentials,
    RemoteControlReply,
    decode_datetime,
    di_from_wire,
    di_to_wire,
    encode_datetime,
)
from protocols.errors import FrameLengthError, FrameStructureError, LinkTimeout, MeterRefused

DI_IDENTITY_AUTH = 0x070000FF  # 身份认证
PA_ENCRYPTED = 0x98  # 98H: the 1CH data after the operator code is ciphertext + MAC
BLOCK = 16  # SM4 block
FIELD = 8  # cipher1, random1, factor, ESAM serial
RANDOM2 = 4
MAC = 4
SEALED = BLOCK + MAC  # ciphertext + MAC of one control command

# The SGCC security error word SERR (2 bytes) of an abnormal 03H reply.
SERR_NAMES: dict[int, str] = {
    0x0001: "other_error",
    0x0002: "repeated_recharge",
    0x0004: "esam_verification_failed",
    0x0008: "identity_authentication_failed",
    0x0010: "customer_number_mismatch",
    0x0020: "recharge_count_error",
    0x0040: "purchase_exceeds_hoarding_limit",
}
SERR_AUTH_FAILED = 0x0008


class AuthenticationRefused(MeterRefused):
    """The meter refused the identity authentication (03H abnormal reply, SERR word)."""


# --- the 03H and 98H messages -------------------------------------------------------------


def _rev(raw: bytes) -> bytes:
    return bytes(reversed(raw))


def _need(frame: Frame, size: int, what: str) -> None:
    if len(frame.data) != size:
        raise FrameLengthError(
            Msg(
                N_("{what} needs {size} data bytes, got {data}"),
                what=what,
                size=size,
                data=len(frame.data),
            )
        )


def _operator_field(operator: str) -> bytes:
    return Credentials(0, "000000", operator).operator_field()


def _operator_text(raw: bytes) -> str:
    return "".join(f"{b:02X}" for b in reversed(raw))


@dataclass(frozen=True, slots=True)
class AuthenticationChallenge:
    """What the security module produces for 03H: cipher1, random1, factor (8 bytes each)."""

    cipher: bytes = field(repr=False)
    random: bytes = field(repr=False)
    factor: bytes

    def __post_init__(self) -> None:
        for name in ("cipher", "random", "factor"):
            if len(getattr(self, name)) != FIELD:
                raise FrameLengthError(
                    Msg(
                        N_("identity authentication {name} must be {field} bytes"),
                        name=name,
                        field=FIELD,
                    )
                )


@dataclass(frozen=True, slots=True)
class MeterSession:
    """The meter's answer to 03H: random2 (binds the next MAC) and its ESAM serial number."""

    random2: bytes = field(repr=False)
    esam_serial: bytes


@dataclass(frozen=True, slots=True)
class AuthenticationRequest:
    """03H, DI 070000FF: identity authentication (身份认证)."""

    address: str
    operator: str
    challenge: AuthenticationChallenge

    def to_frame(self) -> Frame:
        c = self.challenge
        return Frame(
            self.address,
            FunctionCode.SECURITY,
            di_to_wire(DI_IDENTITY_AUTH)
            + _operator_field(self.operator)
            + _rev(c.cipher)
            + _rev(c.random)
            + _rev(c.factor),
        )

    @classmethod
    def from_frame(cls, frame: Frame) -> AuthenticationRequest:
        _need(frame, 4 + 4 + 3 * FIELD, "identity authentication (03H)")
        if di_from_wire(frame.data) != DI_IDENTITY_AUTH:
            raise FrameStructureError(
                Msg(
                    N_("03H data identifier {di_from_wire:08X} is not 070000FF"),
                    di_from_wire=di_from_wire(frame.data),
                )
            )
        d = frame.data
        return cls(
            frame.address,
            _operator_text(d[4:8]),
            AuthenticationChallenge(_rev(d[8:16]), _rev(d[16:24]), _rev(d[24:32])),
        )


@dataclass(frozen=True, slots=True)
class AuthenticationReply:
    """83H: random2 (4) + ESAM serial number (8)."""

    address: str
    session: MeterSession

    def to_frame(self) -> Frame:
        return Frame(
            self.address,
            0x80 | FunctionCode.SECURITY,
            di_to_wire(DI_IDENTITY_AUTH)
            + _rev(self.session.random2)
            + _rev(self.session.esam_serial),
        )

    @classmethod
    def from_frame(cls, frame: Frame) -> AuthenticationReply:
        _need(frame, 4 + RANDOM2 + FIELD, "identity authentication reply (83H)")
        d = frame.data
        return cls(frame.address, MeterSession(_rev(d[4:8]), _rev(d[8:16])))


@dataclass(frozen=True, slots=True)
class SealedControlRequest:
    """1CH with PA = 98H: ciphertext + MAC from the security module (password unused)."""

    address: str
    operator: str
    sealed: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.sealed) != SEALED:
            raise FrameLengthError(
                Msg(N_("sealed control data must be {sealed} bytes"), sealed=SEALED)
            )

    def to_frame(self) -> Frame:
        return Frame(
            self.address,
            FunctionCode.REMOTE_CONTROL,
            bytes((PA_ENCRYPTED, 0, 0, 0)) + _operator_field(self.operator) + _rev(self.sealed),
        )

    @classmethod
    def from_frame(cls, frame: Frame) -> SealedControlRequest:
        _need(frame, 8 + SEALED, "encrypted remote control (1CH, PA=98H)")
        if frame.data[0] != PA_ENCRYPTED:
            raise FrameStructureError(Msg(N_("PA {value:02X}H is not 98H"), value=frame.data[0]))
        return cls(frame.address, _operator_text(frame.data[4:8]), _rev(frame.data[8:]))


@dataclass(frozen=True, slots=True)
class RawControlRequest:
    """1CH with data already built by a module (plaintext 16 bytes or PA=98H 28 bytes)."""

    address: str
    data: bytes = field(repr=False)

    def to_frame(self) -> Frame:
        return Frame(self.address, FunctionCode.REMOTE_CONTROL, self.data)


def is_sealed_control(frame: Frame) -> bool:
    """A 1CH request whose PA is 98H (the meter hands it to its ESAM)."""
    return (
        frame.function == FunctionCode.REMOTE_CONTROL
        and not frame.is_reply
        and len(frame.data) >= 1
        and frame.data[0] == PA_ENCRYPTED
    )


# 03H has no decoder in the base tables: register ours, so ``Dlt645Client.request`` and
# ``frame describe`` know it.
register_decoder(FunctionCode.SECURITY, False, AuthenticationRequest.from_frame)
register_decoder(FunctionCode.SECURITY, True, AuthenticationReply.from_frame)


# --- the interface ---------------------------------------------------------------------------


@runtime_checkable
class SecurityModule(Protocol):
    """What a security module (ESAM host side / 密码机 client) must provide.

    ``requires_authentication`` False means :meth:`authenticate` is never called and
    :meth:`seal_control` returns the whole plaintext 1CH data (the plaintext path).
    """

    name: str
    requires_authentication: bool

    async def authenticate(self, meter_address: str) -> AuthenticationChallenge:
        """cipher1, random1 and the diversification factor for a 03H to this meter."""
        ...

    async def seal_control(
        self,
        meter_address: str,
        action: ControlAction,
        valid_until: datetime,
        *,
        session: MeterSession | None,
        operator: str,
        n2: int = 0,
    ) -> bytes:
        """The 1CH data after the meter's 83H answer (``session``): for PA 98H the 20-byte
        ciphertext + MAC; for plaintext the full 16 bytes PA P0-P2 C0-C3 N1 N2 N3-N8."""
        ...


class PlaintextModule:
    """The plaintext path: PA 02H/04H and the password (meters that accept it)."""

    name = "plaintext"
    requires_authentication = False

    def __init__(self, credentials: Credentials) -> None:
        self.credentials = credentials

    async def authenticate(self, meter_address: str) -> AuthenticationChallenge:
        raise NotImplementedError(Msg(N_("the plaintext path has no identity authentication")))

    async def seal_control(
        self,
        meter_address: str,
        action: ControlAction,
        valid_until: datetime,
        *,
        session: MeterSession | None = None,
        operator: str = "",
        n2: int = 0,
    ) -> bytes:
        return (
            self.credentials.password_field()
            + self.credentials.operator_field()
            + bytes((action, n2))
            + encode_datetime(valid_until)
        )

    def __repr__(self) -> str:
        return f"PlaintextModule({self.credentials!r})"


# --- the software stand-in: SM4 ----------------------------------------------------------------


@dataclass(frozen=True)
class SecurityKeys:
    """Master keys: identity authentication (身份认证密钥) and control (控制命令密钥)."""

    identity: bytes = field(repr=False)
    control: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.identity) != BLOCK or len(self.control) != BLOCK:
            raise ConfigError(Msg(N_("security keys must be 16 bytes (32 hex digits) each")))

    @classmethod
    def test_keys(cls) -> SecurityKeys:
        """Public test keys (like a meter still on its 公钥): for tests and the simulator only."""
        return cls(
            bytes.fromhex("6D65746572637472 6C2D746573742D31".replace(" ", "")),
            bytes.fromhex("6D65746572637472 6C2D746573742D32".replace(" ", "")),
        )

    @classmethod
    def from_file(cls, path: str | Path) -> SecurityKeys:
        """``identity = "32 hex"`` and ``control = "32 hex"`` in a TOML file.

        Raises:
            ConfigError: unreadable, or keys missing / not 16 bytes (never echoes a key).
        """
        file = Path(path)
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(
                Msg(
                    N_("security key file {file}: cannot read: {strerror}"),
                    file=file,
                    strerror=exc.strerror,
                )
            ) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(
                Msg(N_("security key file {file} is not valid TOML: {exc}"), file=file, exc=exc)
            ) from None
        try:
            return cls(bytes.fromhex(str(data["identity"])), bytes.fromhex(str(data["control"])))
        except KeyError as exc:
            raise ConfigError(
                Msg(
                    N_("security key file {file}: missing key {value!r}"),
                    file=file,
                    value=exc.args[0],
                )
            ) from None
        except ValueError:
            raise ConfigError(
                Msg(N_("security key file {file}: keys must be 32 hex digits"), file=file)
            ) from None


def sm4_encrypt_block(key: bytes, block: bytes) -> bytes:
    """One SM4 block (ECB)."""
    encryptor = Cipher(algorithms.SM4(key), modes.ECB()).encryptor()
    return encryptor.update(block) + encryptor.finalize()


def sm4_decrypt_block(key: bytes, block: bytes) -> bytes:
    decryptor = Cipher(algorithms.SM4(key), modes.ECB()).decryptor()
    return decryptor.update(block) + decryptor.finalize()


def pad(data: bytes) -> bytes:
    """ISO/IEC 9797-1 method 2: 80H then zeros to a whole block."""
    padded = data + b"\x80"
    return padded + bytes(-len(padded) % BLOCK)


def unpad(data: bytes) -> bytes:
    """Raises FrameStructureError: no 80H 00.. padding."""
    stripped = data.rstrip(b"\x00")
    if not stripped.endswith(b"\x80"):
        raise FrameStructureError(Msg(N_("decrypted control data has no 80H padding")))
    return stripped[:-1]


def diversify(master: bytes, factor: bytes) -> bytes:
    """A meter's key: SM4(master, factor ‖ ¬factor) (分散: one key per meter)."""
    return sm4_encrypt_block(master, factor + bytes(b ^ 0xFF for b in factor))


def cbc_mac(key: bytes, iv: bytes, data: bytes) -> bytes:
    """SM4 CBC-MAC over padded ``data`` starting from ``iv``: the last block."""
    state = iv
    padded = pad(data)
    for i in range(0, len(padded), BLOCK):
        block = bytes(a ^ b for a, b in zip(state, padded[i : i + BLOCK], strict=True))
        state = sm4_encrypt_block(key, block)
    return state


def factor_for(meter_address: str) -> bytes:
    """The diversification factor: 0000H + the 6-byte address (high byte first)."""
    return b"\x00\x00" + _rev(address_to_wire(meter_address))


def _cipher1(identity_key: bytes, random1: bytes) -> bytes:
    return sm4_encrypt_block(identity_key, random1 + bytes(FIELD))[:FIELD]


def _mac_input(meter_address: str, operator: str, ciphertext: bytes) -> bytes:
    return address_to_wire(meter_address) + _operator_field(operator) + ciphertext


def _control_plaintext(action: int, n2: int, valid_until: datetime) -> bytes:
    return bytes((action, n2)) + encode_datetime(valid_until)


class SoftwareSecurityModule:
    """A software stand-in for the 密码机 (SM4, test keys by default). Not for real meters."""

    name = "software"
    requires_authentication = True

    def __init__(
        self,
        keys: SecurityKeys | None = None,
        *,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.keys = keys or SecurityKeys.test_keys()
        self._random = random_bytes

    async def authenticate(self, meter_address: str) -> AuthenticationChallenge:
        factor = factor_for(meter_address)
        random1 = self._random(FIELD)
        key = diversify(self.keys.identity, factor)
        return AuthenticationChallenge(_cipher1(key, random1), random1, factor)

    async def seal_control(
        self,
        meter_address: str,
        action: ControlAction,
        valid_until: datetime,
        *,
        session: MeterSession | None,
        operator: str,
        n2: int = 0,
    ) -> bytes:
        if session is None:
            raise FrameStructureError(
                Msg(N_("an encrypted control command needs the meter's session"))
            )
        key = diversify(self.keys.control, session.esam_serial)
        ciphertext = sm4_encrypt_block(key, pad(_control_plaintext(action, n2, valid_until)))
        iv = session.random2 + bytes(BLOCK - RANDOM2)
        mac = cbc_mac(key, iv, _mac_input(meter_address, operator, ciphertext))[:MAC]
        return ciphertext + mac

    def __repr__(self) -> str:
        return "SoftwareSecurityModule(keys=<hidden>)"


@dataclass
class OpenedControl:
    """A 98H command the meter-side ESAM accepted: N1, N2 and the deadline N3..N8."""

    action: int
    n2: int
    valid_until: datetime


class SoftwareEsam:
    """The meter side of the stand-in (the simulator's ESAM): verify 03H, open 98H.

    Holds one session (random2) after a successful authentication; a 98H command consumes
    it whatever its outcome, so every command needs a fresh authentication.
    """

    def __init__(
        self,
        meter_address: str,
        keys: SecurityKeys | None = None,
        *,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.meter_address = meter_address
        self.keys = keys or SecurityKeys.test_keys()
        self.serial = b"\x86\x00" + _rev(address_to_wire(meter_address))
        self._random = random_bytes
        self._random2: bytes | None = None

    @property
    def authenticated(self) -> bool:
        return self._random2 is not None

    def authenticate(self, request: AuthenticationRequest) -> MeterSession | None:
        """Check cipher1 against our own key; None (and no session) when it is wrong."""
        self._random2 = None
        challenge = request.challenge
        if challenge.factor != factor_for(self.meter_address):
            return None
        key = diversify(self.keys.identity, challenge.factor)
        if _cipher1(key, challenge.random) != challenge.cipher:
            return None
        self._random2 = self._random(RANDOM2)
        return MeterSession(self._random2, self.serial)

    def open_control(self, request: SealedControlRequest) -> OpenedControl | None:
        """Verify the MAC and decrypt; None when unauthenticated or the MAC is wrong."""
        random2, self._random2 = self._random2, None
        if random2 is None:
            return None
        key = diversify(self.keys.control, self.serial)
        ciphertext, mac = request.sealed[:BLOCK], request.sealed[BLOCK:]
        iv = random2 + bytes(BLOCK - RANDOM2)
        expected = cbc_mac(key, iv, _mac_input(self.meter_address, request.operator, ciphertext))
        if expected[:MAC] != mac:
            return None
        try:
            plain = unpad(sm4_decrypt_block(key, ciphertext))
            if len(plain) != 8:
                return None
            return OpenedControl(plain[0], plain[1], decode_datetime(plain[2:8]))
        except FrameStructureError:
            return None


def load_security_module(spec: str, key_file: str | Path | None = None) -> SecurityModule:
    """The module named in the config: ``software`` or ``package.module:factory``.

    A vendor factory is called as ``factory(key_file)`` and must return an object with
    the :class:`SecurityModule` attributes.

    Raises:
        ConfigError: unknown module, import failure, or keys that cannot be read.
    """
    name = spec.strip()
    if name in ("", "software"):
        keys = SecurityKeys.from_file(key_file) if key_file else None
        return SoftwareSecurityModule(keys)
    module_name, sep, factory_name = name.partition(":")
    if not sep:
        raise ConfigError(
            Msg(
                N_("security module {name!r}: use 'software' or 'package.module:factory'"),
                name=name,
            )
        )
    try:
        module = importlib.import_module(module_name)
        factory: Any = getattr(module, factory_name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(
            Msg(N_("security module {name!r} cannot be loaded: {exc}"), name=name, exc=exc)
        ) from None
    loaded = factory(key_file)
    if not isinstance(loaded, SecurityModule):
        raise ConfigError(
            Msg(N_("security module {name!r} does not implement SecurityModule"), name=name)
        )
    return loaded


# --- the exchange ------------------------------------------------------------------------------


async def send_control(
    client: Any,
    module: SecurityModule,
    meter_address: str,
    action: ControlAction,
    valid_until: datetime,
    *,
    operator: str,
) -> RemoteControlReply:
    """Remote control through ``module``: [03H authentication,] then 1CH. Sent once.

    ``client`` is a :class:`~protocols.client.dlt645.Dlt645Client` (typed loosely: the
    client module imports the links, which must not import this one back).

    Raises:
        AuthenticationRefused: the meter refused the identity authentication.
        MeterRefused: the meter refused the command (PasswordRefused for ERR 04H).
        LinkTimeout: no reply; the command may have been executed (read status word 3).
    """
    session: MeterSession | None = None
    if module.requires_authentication:
        challenge = await module.authenticate(meter_address)
        try:
            reply = await client.request(AuthenticationRequest(meter_address, operator, challenge))
        except MeterRefused as exc:
            if exc.function != FunctionCode.SECURITY:
                raise
            names = tuple(n for bit, n in SERR_NAMES.items() if exc.error_word & bit) or (
                "identity_authentication_failed",
            )
            raise AuthenticationRefused(
                Msg(
                    N_(
                        "meter {meter_address} refused the identity authentication (03H): {items} (SERR={error_word:04X}H)"
                    ),
                    meter_address=meter_address,
                    items=", ".join(names),
                    error_word=exc.error_word,
                ),
                error_word=exc.error_word,
                errors=names,
                function=FunctionCode.SECURITY,
            ) from None
        if not isinstance(reply, AuthenticationReply):
            raise FrameStructureError(Msg(N_("03H answered by {name}"), name=type(reply).__name__))
        session = reply.session
    data = await module.seal_control(
        meter_address, action, valid_until, session=session, operator=operator
    )
    if module.requires_authentication:
        request: Any = SealedControlRequest(meter_address, operator, data)
    else:
        request = RawControlRequest(meter_address, data)
    try:
        answer = await client.request(request)
    except LinkTimeout as exc:
        raise LinkTimeout(
            Msg(
                N_(
                    "{exc}; the {value} command may have been executed: read status word 3 before deciding to resend"
                ),
                exc=exc,
                value=action.name.lower(),
            )
        ) from exc
    if not isinstance(answer, RemoteControlReply):
        raise FrameStructureError(Msg(N_("1CH answered by {name}"), name=type(answer).__name__))
    return answer
