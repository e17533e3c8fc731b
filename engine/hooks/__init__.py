"""The payment hook (``POST /payments``): HMAC-signed calls from the billing system.

:mod:`engine.hooks.signature` checks signatures, clock skew and replays (pure, no I/O);
:mod:`engine.hooks.payments` is the aiohttp application ``meterctl serve`` runs.
"""
