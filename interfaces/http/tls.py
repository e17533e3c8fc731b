"""HTTPS for ``meterctl serve`` and the identity of a client certificate (mutual TLS).

``[hooks] tls_cert_file`` / ``tls_key_file`` serve the payment hook and the integration API
over HTTPS. With ``tls_client_ca_file`` a client may present a certificate signed by that CA;
its subject common name (CN) identifies the ``[api.clients.NAME]`` whose ``certificate_cn``
it is, instead of a signature on each request (a certificate that does not verify ends the
handshake; a client without one still signs its requests).
"""

from __future__ import annotations

import ssl

from aiohttp import web

from base.errors import ConfigError
from base.i18n import N_, Msg
from engine.config import Config


def _file(config: Config, key: str, value: str) -> str:
    path = config.resolve_path(value)
    if not path.is_file():
        raise ConfigError(
            Msg(N_("config key hooks.{key}: no such file {path!r}"), key=key, path=str(path))
        )
    return str(path)


def server_context(config: Config) -> ssl.SSLContext | None:
    """The server's TLS context, or None for plain HTTP (no ``tls_cert_file``)."""
    hooks = config.hooks
    if not hooks.tls_cert_file:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(
            _file(config, "tls_cert_file", hooks.tls_cert_file),
            _file(config, "tls_key_file", hooks.tls_key_file),
        )
    except ssl.SSLError as exc:
        raise ConfigError(
            Msg(
                N_(
                    "config key hooks.tls_cert_file: the certificate and key cannot be used "
                    "({reason})"
                ),
                reason=exc.reason,
            )
        ) from None
    if hooks.tls_client_ca_file:
        try:
            context.load_verify_locations(
                _file(config, "tls_client_ca_file", hooks.tls_client_ca_file)
            )
        except ssl.SSLError as exc:
            raise ConfigError(
                Msg(
                    N_("config key hooks.tls_client_ca_file: not a CA certificate ({reason})"),
                    reason=exc.reason,
                )
            ) from None
        # Optional: a client with a certificate is verified against the CA (a bad one ends
        # the handshake); one without signs its requests as before.
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


def peer_common_name(request: web.Request) -> str | None:
    """The subject CN of the client's verified certificate, or None (no TLS, no certificate)."""
    transport = request.transport
    if transport is None or transport.get_extra_info("sslcontext") is None:
        return None
    cert = transport.get_extra_info("peercert")
    if not cert:
        return None
    for rdn in cert.get("subject", ()):
        for name, value in rdn:
            if name == "commonName":
                return str(value)
    return None
