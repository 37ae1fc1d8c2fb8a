"""vitalrisk: stream."""
