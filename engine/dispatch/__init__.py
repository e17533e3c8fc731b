"""Dispatching switch orders to meters.

``identity``   — who this process is, and whether another holder is still alive.
``leases``     — one process drives a bus at a time (a lease that a dead holder loses).
``queue``      — claiming the next due order of a bus (reconnections first) and recovery.
``journal``    — the write-ahead trace of commands (crash safety).
``outcomes``   — turning a switch outcome into order states, field orders and notifications.
``dispatcher`` — the async workers: one per bus, all buses in parallel.
"""
