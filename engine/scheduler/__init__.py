"""``meterctl serve``'s moving parts: leader election, the APScheduler jobs, armed polls.

- :mod:`engine.scheduler.leader`: exactly one process runs the scheduler (PostgreSQL advisory
  lock, or a lease row on SQLite), with failover when the leader dies.
- :mod:`engine.scheduler.jobs`: the APScheduler 3 instance (tick, batch cron, sweeps).
- :mod:`engine.scheduler.armed`: reading armed (1BH) meters for the customer's button press.

The durable timers themselves are in :mod:`engine.timers`, the sweeps in :mod:`engine.sweeps`,
the escalation of work remote control did not finish in :mod:`engine.escalation`.
The ``serve`` process that runs them beside the HTTP server is :mod:`interfaces.server`.
This package imports nothing heavy at import time.
"""
