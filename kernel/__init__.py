"""vitalrisk: the shared kernel.

Events, the wire format and its limits, the vocabulary of metrics and units, the root of the
errors and the settings: what every other package may import. The kernel imports nothing
first-party outside ``kernel/``.
"""
