"""What a simulated fleet takes from the site it stands in for.

The simulator is its own layer: it does not read meterctl's config. Whoever starts it next
to the engine (``meterctl simulate``, ``meterctl demo``: :mod:`interfaces.simulation`)
passes the few site facts a real meter would have been set up with.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SimulatorSettings:
    """Site facts for simulated meters.

    Attributes:
        timezone: the meters keep local time in this zone (a 1CH deadline is local time).
        password: the control password of meters whose fleet row gives none.
        password_level: that password's level (PA), 02 plaintext by default.
        security_key_file: the ESAM stand-in's keys (None: the public test keys).
    """

    timezone: str = "Asia/Shanghai"
    password: str = "000000"
    password_level: int = 2
    security_key_file: Path | None = None
