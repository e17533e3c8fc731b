"""Field work orders (现场工单): time limits, dispatch, escalation, follow-up calls, complaints.

Engine-level functions only (no CLI): the ``field-orders`` and ``complaints`` commands and a
work-item API call the same ones.

- :mod:`engine.fieldwork.limits`: the time limits (pure);
- :mod:`engine.fieldwork.orders`: plan / accept / assign / close / reopen;
- :mod:`engine.fieldwork.readback`: read the meter before closing;
- :mod:`engine.fieldwork.followups`: 回访 items and their results;
- :mod:`engine.fieldwork.complaints`: 投诉;
- :mod:`engine.fieldwork.overdue`: the scheduler tick (plan, follow-ups, 预警 / 督办);
- :mod:`engine.fieldwork.figures`: the report's measures.
"""
