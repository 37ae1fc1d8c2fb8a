"""vitalrisk: simulators."""
