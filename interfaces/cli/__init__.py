"""``meterctl``: one module per command group (typer), registered by name in :mod:`.main`."""
