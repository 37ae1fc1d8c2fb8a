"""The ingest gateway: where devices and vendors upload readings over HTTP.

The formats an upload may come in (native ``vitalrisk.device/1``, FHIR R4, Open mHealth) are read
by the pure modules :mod:`gateway.uploads` (the entry point), :mod:`gateway.native`,
:mod:`gateway.fhir` and :mod:`gateway.omh`; see docs/gateway-formats.md.
"""
