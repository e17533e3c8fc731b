"""Starting the simulator next to the engine: the site facts it takes from meterctl's config.

The simulator does not read the config itself (it is a layer of its own, shippable without the
engine); ``meterctl simulate`` and ``meterctl demo`` hand it these.
"""

from __future__ import annotations

from engine.config import Config
from simulator.settings import SimulatorSettings


def simulator_settings(config: Config) -> SimulatorSettings:
    """The timezone, default password and key file the simulated meters of ``config``'s site use."""
    key_file = config.dlt645.security_key_file
    return SimulatorSettings(
        timezone=config.site.timezone,
        password=config.dlt645.password,
        password_level=config.dlt645.password_level,
        security_key_file=config.resolve_path(key_file) if key_file else None,
    )
