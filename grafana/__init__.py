"""Grafana boards, provisioning and Prometheus rules for vitalrisk, as typed Python.

Run ``python -m grafana.build`` from the repository root to regenerate every file under
``grafana/dashboards``, ``grafana/provisioning/{datasources,dashboards}`` and
``grafana/prometheus`` (except the hand-written promtool tests in ``grafana/prometheus/tests``);
``python -m grafana.build --check`` fails when a committed file differs from the generator.
Edit the Python, never the generated files.
"""
