"""The user interfaces: the ``meterctl`` command line, the HTTP server and the demo.

The top layer. It turns what a person or a utility system asks for into calls on the engine
core (which knows nothing of typer, rich or HTTP), and it is the only layer that starts the
simulator next to the engine (``meterctl simulate``, ``meterctl demo``).
"""
