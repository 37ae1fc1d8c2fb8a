"""vitalrisk: sinks."""
