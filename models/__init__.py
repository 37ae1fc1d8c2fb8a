"""vitalrisk: models."""
