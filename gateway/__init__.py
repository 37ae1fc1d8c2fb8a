"""The ingest gateway: devices and vendors upload vitals over HTTP, authenticated, validated,
produced to Kafka.

The formats an upload may come in (native ``vitalrisk.device/1``, FHIR R4, Open mHealth) are read
by the pure modules :mod:`gateway.uploads` (the entry point), :mod:`gateway.native`,
:mod:`gateway.fhir` and :mod:`gateway.omh` (docs/gateway-formats.md); the service around them
(:mod:`gateway.app`, :mod:`gateway.service`, :mod:`gateway.producer`) authenticates, limits and
produces (docs/gateway.md).
"""
