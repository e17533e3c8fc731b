"""Switching a meter: one driver interface for every protocol, and the safe procedure.

``drivers``   — :class:`MeterDriver` over DL/T 645 (1CH) and Modbus (coil 0), opened per bus.
``procedure`` — disconnect / reconnect of one order: re-check, identity check, command sent
               once, read-back, bounded retries only where the read-back proves them needed.
"""
