"""Where the pipeline keeps state that must survive a restart: a small key-value protocol.

The core never touches Kafka: it reads and writes opaque bytes by key through a
:class:`StateStore`. The worker backs it with a Faust table (changelog topic, restored on
start and moved with its partition on rebalance); tests and the in-process runner use
:class:`DictStore`.

Keys are ``"p:<patient id>"`` for a patient's features state and ``"w:<partition>"`` for a
partition's window checkpoint; every write names the partition it belongs to, so a
changelog record lands in the same partition as the readings it summarises.
"""

from __future__ import annotations

from typing import Protocol


class StateStore(Protocol):
    """Durable key-value state, partitioned like the input topic."""

    def get(self, key: str) -> bytes | None:
        """The value last put under ``key``, or ``None``."""
        ...

    def put(self, partition: int, key: str, value: bytes) -> None:
        """Store ``value`` under ``key`` in ``partition``."""
        ...

    def delete(self, partition: int, key: str) -> None:
        """Forget ``key``."""
        ...


class DictStore:
    """A :class:`StateStore` in a dict: for tests and the in-process runner.

    >>> store = DictStore()
    >>> store.put(0, "p:pt-1", b"x")
    >>> store.get("p:pt-1"), store.get("p:pt-2")
    (b'x', None)
    """

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def get(self, key: str) -> bytes | None:
        return self.data.get(key)

    def put(self, partition: int, key: str, value: bytes) -> None:
        self.data[key] = value

    def delete(self, partition: int, key: str) -> None:
        self.data.pop(key, None)
