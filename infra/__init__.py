"""vitalrisk: infra."""
