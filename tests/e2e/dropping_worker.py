"""A real ``vitalrisk worker`` whose Faust consumer throws away one partition's records from an
offset on, each once: what Faust does to records it fetched for a partition it paused while a
rebalance's table recovery ran (``stream/stall.py``). The fetcher's position is then past records
the agent never got; nothing else differs from ``vitalrisk worker``.

Run: ``python -m tests.e2e.dropping_worker PARTITION FROM_OFFSET`` with the worker's environment.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from kernel.settings import WORKER_ROLE, Settings
from stream.worker import serve, worker_app

logger = logging.getLogger("dropping_worker")


def main(partition: int, from_offset: int) -> int:
    settings = Settings().for_service(WORKER_ROLE)
    dropped: set[int] = set()

    def build(registry: Any) -> Any:
        app = worker_app(settings, registry)
        consumer = app.consumer
        deliver = consumer.callback  # Faust's conductor: hands a fetched record to the agent

        async def dropping(message: Any) -> None:
            if message.topic == settings.readings_topic and message.partition == partition and \
                    message.offset >= from_offset and message.offset not in dropped:
                dropped.add(message.offset)
                logger.warning("dropped %s[%d]@%d", message.topic, partition, message.offset)
                return
            await deliver(message)

        consumer.callback = dropping  # read by Faust's fetcher when it starts, after the first assignment
        return app

    logging.basicConfig(level=logging.INFO)
    return serve(settings, build)


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]), int(sys.argv[2])))
