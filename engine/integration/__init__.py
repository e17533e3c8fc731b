"""The integration API's engine side (IEC 61968-9 EndDeviceControls / EndDeviceEvents).

Nothing here knows HTTP: :mod:`interfaces.http.cim` (aiohttp) parses requests with
:mod:`.messages`, checks the client with :mod:`.clients`, and calls :mod:`.controls` to take
a message (one transaction, before the reply), to turn accepted controls into switch orders
through the same policy chain and order creation as ``batch run`` (after the reply), and to
cancel. :mod:`.events` follows each device's order to its outcome and writes the
``EndDeviceEvents`` callbacks into the durable outbox :mod:`.outbox`, which the server
delivers. See docs/integration.md.
"""
