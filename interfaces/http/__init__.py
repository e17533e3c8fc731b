"""The payment hook (``POST /payments``): HMAC-signed calls from the billing system.

:mod:`interfaces.http.signature` checks signatures, clock skew and replays (pure, no I/O);
:mod:`interfaces.http.payments` is the aiohttp application ``meterctl serve`` runs.
"""
