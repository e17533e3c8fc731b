"""``meterctl serve``'s moving parts: leader election, the APScheduler jobs, escalation, armed polls.

- :mod:`engine.scheduler.leader`: exactly one process runs the scheduler (PostgreSQL advisory
  lock, or a lease row on SQLite), with failover when the leader dies.
- :mod:`engine.scheduler.jobs`: the APScheduler 3 instance (tick, batch cron, sweeps).
- :mod:`engine.scheduler.escalation`: field order + alert for work remote control did not finish.
- :mod:`engine.scheduler.armed`: reading armed (1BH) meters for the customer's button press.
- :mod:`engine.scheduler.service`: the ``serve`` process (node, hook, dispatcher, scheduler).

The durable timers themselves are in :mod:`engine.timers`, the sweeps in :mod:`engine.sweeps`.
This package imports nothing heavy at import time.
"""
