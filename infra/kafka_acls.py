"""Who may do what on the secured broker: one Kafka principal per service, each with only what it uses.

:data:`PRINCIPALS` is the one table of the ACLs (the README's "Kafka principals" table is
rendered from it, and a test checks the two agree). A name in braces is a setting: the
principal is granted the topic or group that setting names, so renamed or per-test topics are
covered by the same table. ``admin`` is the broker's super user (it creates topics and the ACLs)
and has no rows. Operations follow Kafka's ACL model: ``Read`` and ``Write`` imply ``Describe``;
a consumer group needs ``Read`` on the group as well as on its topics.

Faust's own topics: the worker's table changelog (``{app_id}-state-changelog``) and each app's
assignor leader topic (``<app id>-__assignor-__leader``), which Faust creates at start. The
alerter's app id is ``{app_id}-alerter``, so the worker's are granted by literal name, not by
the prefix ``{app_id}-``, which would cover the alerter's too.

Examples
--------
>>> from kernel.settings import Settings
>>> [str(rule) for rule in rules("device", Settings())]
['Write topic vitals.readings']
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from itertools import groupby
from typing import Literal

from kafka.admin import (
    ACL,
    ACLFilter,
    ACLOperation,
    ACLPermissionType,
    ACLResourcePatternType,
    KafkaAdminClient,
    ResourcePattern,
    ResourceType,
)

from infra.errors import ServiceFailed
from kernel.settings import Settings

#: The super user: topic creation, ACLs.
ADMIN = "admin"
#: How long :func:`apply` waits for the broker to enforce the ACLs it created, seconds.
APPLY_TIMEOUT_S = 15.0


@dataclass(frozen=True, slots=True)
class Grant:
    """Operations on a topic or group whose name is ``name`` with settings filled in.

    >>> str(Grant("topic", "{app_id}-alerter-", ("Read", "Write"), prefixed=True).bind(Settings()))
    'Read, Write topic vitalrisk-alerter-* (prefix)'
    """

    resource: Literal["topic", "group"]
    name: str
    operations: tuple[str, ...]
    prefixed: bool = False

    def bind(self, settings: Settings) -> Rule:
        return Rule(self.resource, self.name.format(**settings.model_dump()), self.operations, self.prefixed)


@dataclass(frozen=True, slots=True)
class Rule:
    """A :class:`Grant` for one set of settings: the resource's real name."""

    resource: Literal["topic", "group"]
    name: str
    operations: tuple[str, ...]
    prefixed: bool

    def __str__(self) -> str:
        return f"{', '.join(self.operations)} {self.resource} {self.name}{'* (prefix)' if self.prefixed else ''}"


def _topics(operations: tuple[str, ...], *names: str) -> tuple[Grant, ...]:
    return tuple(Grant("topic", name, operations) for name in names)


READ, WRITE, FAUST_OWN = ("Read",), ("Write",), ("Read", "Write", "Create")

#: Each service's principal: what it is, and its grants.
PRINCIPALS: dict[str, tuple[str, tuple[Grant, ...]]] = {
    "worker": ("Faust worker: scores readings, writes features, scores and dead letters", (
        *_topics(READ, "{readings_topic}", "{snapshots_topic}", "{patients_topic}"),
        *_topics(WRITE, "{features_topic}", "{scores_topic}", "{deadletter_topic}"),
        *_topics(FAUST_OWN, "{app_id}-state-changelog", "{app_id}-__assignor-__leader"),
        Grant("group", "{app_id}", READ),
    )),
    "trainer": ("trainer: learns from features and outcomes, the only writer of model snapshots", (
        *_topics(READ, "{features_topic}", "{outcomes_topic}", "{patients_topic}"),
        *_topics(("Read", "Write"), "{snapshots_topic}"),
    )),
    "alerter": ("alerter: reads scores, dead-letters unreadable ones; writes no feature topic", (
        *_topics(READ, "{scores_topic}"),
        *_topics(WRITE, "{deadletter_topic}"),
        Grant("topic", "{app_id}-alerter-", FAUST_OWN, prefixed=True),
        Grant("group", "{app_id}-alerter", READ),
    )),
    "gateway": ("ingest gateway: writes device readings only", _topics(WRITE, "{readings_topic}")),
    "device": ("a device or `vitalrisk replay` publishing directly: writes readings only",
               _topics(WRITE, "{readings_topic}")),
    "simulator": ("simulator and load generator: writes readings, outcomes and patients",
                  _topics(WRITE, "{readings_topic}", "{outcomes_topic}", "{patients_topic}")),
    "operator": ("`vitalrisk deadletters`: reads dead letters, replays them to their source topics", (
        *_topics(READ, "{deadletter_topic}"),
        *_topics(WRITE, "{deadletter_topic}", "{readings_topic}", "{scores_topic}"),
    )),
}


def rules(principal: str, settings: Settings) -> list[Rule]:
    """The ACL rules of ``principal`` for the topics and groups ``settings`` name."""
    return [grant.bind(settings) for grant in PRINCIPALS[principal][1]]


def acls(principal: str, settings: Settings) -> list[ACL]:
    """kafka-python's ACL objects for :func:`rules` (allow, from any host)."""
    out = []
    for rule in rules(principal, settings):
        pattern = ResourcePattern(ResourceType.TOPIC if rule.resource == "topic" else ResourceType.GROUP, rule.name,
                                  ACLResourcePatternType.PREFIXED if rule.prefixed else ACLResourcePatternType.LITERAL)
        out += [ACL(f"User:{principal}", "*", ACLOperation[operation.upper()], ACLPermissionType.ALLOW, pattern)
                for operation in rule.operations]
    return out


def apply(admin: KafkaAdminClient, settings: Settings) -> int:
    """Create every principal's ACLs for ``settings`` (creating an existing ACL changes nothing); the count."""
    wanted = [acl for principal in PRINCIPALS for acl in acls(principal, settings)]
    result = admin.create_acls(wanted)
    if result["failed"]:
        acl, error = result["failed"][0]
        raise ServiceFailed(f"creating the ACL {acl} failed: {error}")
    # The authorizer learns ACLs from the metadata log, a moment after the request returns; once the
    # last one shows, all do (the log is applied in order).
    last = wanted[-1]
    deadline = time.monotonic() + APPLY_TIMEOUT_S
    while not admin.describe_acls(ACLFilter(last.principal, "*", last.operation, last.permission_type,
                                            last.resource_pattern))[0]:
        if time.monotonic() > deadline:
            raise ServiceFailed(f"the broker did not apply its ACLs within {APPLY_TIMEOUT_S:.0f} s")
        time.sleep(0.1)
    return len(wanted)


def markdown_table(settings: Settings) -> str:
    """The README's table: principal, what it is, its grants (default topic names).

    >>> print(markdown_table(Settings()).splitlines()[2])
    | `admin` | super user: creates topics and ACLs | everything |
    """
    lines = ["| Principal | Service | Topics and groups it may use |", "|---|---|---|",
             f"| `{ADMIN}` | super user: creates topics and ACLs | everything |"]
    for principal, (what, _) in PRINCIPALS.items():
        grants = []
        for (operations, resource), same in groupby(rules(principal, settings), key=lambda r: (r.operations,
                                                                                            r.resource)):
            names = ", ".join(f"`{r.name}{'*' if r.prefixed else ''}`" for r in same)
            grants.append(f"{', '.join(operations)} {names}{' (group)' if resource == 'group' else ''}")
        lines.append(f"| `{principal}` | {what} | {'; '.join(grants)} |")
    return "\n".join(lines)
