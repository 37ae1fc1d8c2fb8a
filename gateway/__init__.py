"""The ingest gateway: devices upload vitals over HTTP, authenticated, validated, produced to Kafka."""
