"""What every layer of meterctl may use: the clock, the root of the error tree, shared values.

``base`` imports nothing from the rest of the project, so the codec, the policies, the
simulator and the engine can all depend on it without depending on each other. Keep it
small: a thing belongs here only when two independent layers need the very same object.
"""
