"""``vitalrisk infra acls`` (the Compose stack's kafka-init) on the session's secured broker.

It acts on any broker the settings name, as ``admin``: here the ``secure_kafka`` fixture's, with
topic names of its own so no other test sees them.
"""

from __future__ import annotations

import uuid

import pytest
from kafka import KafkaAdminClient

from infra.compose import apply_acls
from infra.kafka import LocalKafka
from infra.kafka_acls import PRINCIPALS, acls
from kernel.errors import ConfigurationError
from kernel.kafka_security import kafka_python_options

pytestmark = pytest.mark.integration

TOPICS = ("readings_topic", "deadletter_topic", "outcomes_topic", "scores_topic", "features_topic",
          "snapshots_topic", "patients_topic")


def test_infra_acls_makes_the_topics_and_the_whole_acl_table_as_admin(secure_kafka: LocalKafka) -> None:
    run = uuid.uuid4().hex[:8]
    admin = secure_kafka.client_settings("admin").model_copy(update={
        "app_id": f"acls-{run}", **{name: f"acls-{run}.{name.removesuffix('_topic')}" for name in TOPICS}})
    count = apply_acls(admin)
    assert count == sum(len(acls(principal, admin)) for principal in PRINCIPALS)
    client = KafkaAdminClient(bootstrap_servers=admin.kafka_bootstrap, **kafka_python_options(admin))
    try:
        assert {getattr(admin, name) for name in TOPICS} <= set(client.list_topics())
    finally:
        client.close()
    assert apply_acls(admin) == count  # again, as at every `docker-compose up`: nothing changes


def test_infra_acls_acts_only_as_admin(secure_kafka: LocalKafka) -> None:
    with pytest.raises(ConfigurationError, match="VITALS_KAFKA_USERNAME=admin"):
        apply_acls(secure_kafka.client_settings("worker"))
