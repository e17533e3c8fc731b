"""Request/reply over a link: the layer above the codecs and the links.

``protocols.dlt645`` turns bytes into frames and messages (no I/O), ``protocols.links`` moves
frames over a port, a gateway or a concentrator (the only I/O); the client here pairs them:
:class:`~protocols.client.dlt645.Dlt645Client` sends a request, waits out DL/T 645's timing,
matches the reply and retries (pymodbus keeps its client apart from framer and transport the
same way).
"""
