"""Mutual TLS for the integration API: ``serve`` over HTTPS, a client identified by its
certificate (signed by the configured CA, subject CN = its ``certificate_cn``) instead of a
signature; certificates generated here with ``cryptography``."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import Engine, select

from base.clock import FrozenClock
from base.errors import ConfigError
from engine.config import parse_config
from engine.db.integration import API_MESSAGES
from engine.db.models import AUDIT
from interfaces.http.cim import IntegrationApi
from interfaces.http.payments import PaymentHook, start_hook
from interfaces.http.signature import sign
from interfaces.http.tls import server_context
from tests.engine import store_helpers
from tests.engine.scheduler_helpers import BASE_CONFIG
from tests.engine.store_helpers import MONDAY_10_SHANGHAI, add_account

sqlite_engine = store_helpers.sqlite_engine  # fixtures

KEY = b"cis-key-0123456789"


@dataclass
class Issued:
    cert: Path
    key: Path


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class Authority:
    """A throw-away CA that issues server and client certificates into ``folder``."""

    def __init__(self, folder: Path, name: str) -> None:
        self.folder = folder
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = dt.datetime.now(dt.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )
        self.path = folder / f"{name}.pem"
        self.path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, common_name: str, *, server: bool = False) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [
                        x509.oid.ExtendedKeyUsageOID.SERVER_AUTH
                        if server
                        else x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH
                    ]
                ),
                critical=False,
            )
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
        cert = builder.sign(self.key, hashes.SHA256())
        stem = self.folder / f"{common_name}-{self.cert.serial_number % 10**6}"
        issued = Issued(stem.with_suffix(".crt"), stem.with_suffix(".key"))
        issued.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        issued.key.write_bytes(_key_pem(key))
        return issued


@dataclass
class Tls:
    base: str
    ca: Authority
    engine: Engine
    clock: FrozenClock

    def client(self, issued: Issued | None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca.path))
        if issued is not None:
            context.load_cert_chain(str(issued.cert), str(issued.key))
        return context

    async def post(
        self,
        issued: Issued | None,
        body: dict[str, Any],
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                self.base + "/cim/v1/EndDeviceControls",
                data=json.dumps(body).encode(),
                headers={"Content-Type": "application/json", **(headers or {})},
                ssl=self.client(issued),
            ) as answer,
        ):
            return answer.status, await answer.json()


def tls_config(folder: Path, ca: Authority, server: Issued) -> str:
    return f"""
[hooks]
tls_cert_file = "{server.cert}"
tls_key_file = "{server.key}"
tls_client_ca_file = "{ca.path}"
[api.clients.cis]
key = "{KEY.decode()}"
role = "operator"
certificate_cn = "cis-system"
[api.clients.mdm]
key = "viewer-key-0123456789"
role = "viewer"
certificate_cn = "mdm-system"
"""


def message(message_id: str) -> dict[str, Any]:
    return {
        "Header": {"Verb": "create", "Noun": "EndDeviceControls", "MessageID": message_id},
        "Payload": {"EndDeviceControls": [
            {"mRID": "c1", "EndDeviceControlType": {"ref": "3.31.0.23"},
             "EndDevices": [{"mRID": "MA1"}]}
        ]},
    }  # fmt: skip


@pytest.fixture
async def tls(sqlite_engine: Engine, tmp_path: Path) -> AsyncIterator[Tls]:
    add_account(sqlite_engine, "A1", balance="-30.00")
    ca = Authority(tmp_path, "test-ca")
    config = parse_config(
        '[database]\nurl = "sqlite:///unused.db"\n'
        + BASE_CONFIG
        + tls_config(tmp_path, ca, ca.issue("127.0.0.1", server=True))
    )
    clock = FrozenClock(MONDAY_10_SHANGHAI)
    cim = IntegrationApi(sqlite_engine, config, clock=clock)
    hook = PaymentHook(sqlite_engine, config, key=b"pay", clock=clock)
    app = hook.app(client_max_size=64 * 1024 * 1024)
    cim.install(app)
    runner, url = await start_hook(
        hook, "127.0.0.1", 0, app=app, ssl_context=server_context(config)
    )
    assert url.startswith("https://127.0.0.1:")
    try:
        yield Tls(url.rsplit("/", 1)[0], ca, sqlite_engine, clock)
    finally:
        await runner.cleanup()


def audit_rows(engine: Engine) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        return [(r.actor, r.action) for r in conn.execute(select(AUDIT).order_by(AUDIT.c.seq))]


async def test_a_client_certificate_identifies_the_client_without_a_signature(tls: Tls) -> None:
    status, reply = await tls.post(tls.ca.issue("cis-system"), message("m-cert"))
    assert (status, reply["Reply"]["Result"]) == (200, "OK")
    assert ("api:cis", "api.controls.accepted") in audit_rows(tls.engine)
    with tls.engine.connect() as conn:
        assert conn.execute(select(API_MESSAGES.c.client)).scalars().all() == ["cis"]


async def test_the_certificates_client_keeps_its_role(tls: Tls) -> None:
    status, reply = await tls.post(tls.ca.issue("mdm-system"), message("m-viewer"))
    assert status == 403 and reply["Reply"]["Error"][0]["code"] == "role"


async def test_without_a_certificate_a_client_still_signs_and_unsigned_is_401(tls: Tls) -> None:
    body = message("m-signed")
    raw = json.dumps(body).encode()
    stamp = int(tls.clock.now().timestamp())
    signed = {"X-Meterctl-Client": "cis", "X-Meterctl-Timestamp": str(stamp),
              "X-Meterctl-Signature": sign(KEY, stamp, raw)}  # fmt: skip
    assert (await tls.post(None, body, signed))[0] == 200
    status, answer = await tls.post(None, message("m-none"), {"X-Meterctl-Client": "cis"})
    assert status == 401 and answer["field"] == "header"


@pytest.mark.parametrize(
    ("common_name", "claimed", "why"),
    [
        ("stranger", None, "not a configured client"),  # signed by the CA, but no client's
        ("cis-system", "mdm", "another client than the certificate"),
    ],
)
async def test_a_certificate_of_no_client_or_of_another_client_is_401_audited(
    tls: Tls, common_name: str, claimed: str | None, why: str
) -> None:
    headers = {"X-Meterctl-Client": claimed} if claimed else {}
    status, answer = await tls.post(tls.ca.issue(common_name), message("m-x"), headers)
    assert status == 401 and why in answer["error"]
    assert [a for _, a in audit_rows(tls.engine)] == ["refused"]
    with tls.engine.connect() as conn:
        assert conn.execute(select(API_MESSAGES.c.id)).all() == []


async def test_a_certificate_from_another_ca_ends_the_handshake(tls: Tls, tmp_path: Path) -> None:
    (tmp_path / "rogue").mkdir()
    rogue = Authority(tmp_path / "rogue", "rogue-ca").issue("cis-system")
    with pytest.raises(aiohttp.ClientError):
        await tls.post(rogue, message("m-rogue"))
    with tls.engine.connect() as conn:
        assert conn.execute(select(API_MESSAGES.c.id)).all() == []


def test_tls_config_keys_are_checked(tmp_path: Path) -> None:
    base = '[database]\nurl = "sqlite:///unused.db"\n' + BASE_CONFIG
    with pytest.raises(ConfigError, match="tls_client_ca_file"):
        parse_config(base + '[api.clients.cis]\nkey = "k"\ncertificate_cn = "cis"\n')
    with pytest.raises(ConfigError, match="both tls_cert_file and tls_key_file"):
        parse_config(base + '[hooks]\ntls_cert_file = "x.crt"\n')
    config = parse_config(base + '[hooks]\ntls_cert_file = "x.crt"\ntls_key_file = "x.key"\n')
    with pytest.raises(ConfigError, match="no such file"):
        server_context(config)
