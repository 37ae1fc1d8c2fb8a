"""A Faust worker that only counts and acks records: the framework's own ceiling here.

Run by bench_stream.py as ``python bench/faust_count.py BOOTSTRAP TOPIC EXPECTED``; prints one
line ``rate <records/s>`` (first to last record) and exits.
"""

from __future__ import annotations

import os
import sys
import time
import uuid

import faust


def main() -> None:
    bootstrap, topic_name, expected = sys.argv[1], sys.argv[2], int(sys.argv[3])
    app = faust.App(f"bench-count-{uuid.uuid4().hex[:6]}", broker=f"kafka://{bootstrap}", web_enabled=False,
                    stream_wait_empty=False, consumer_auto_offset_reset="earliest",
                    datadir=f"/tmp/faust-count-{os.getpid()}")
    topic = app.topic(topic_name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    seen = {"n": 0, "first": 0.0}

    @app.agent(topic)
    async def count(stream: faust.StreamT[bytes]) -> None:
        async for _ in stream:
            if seen["n"] == 0:
                seen["first"] = time.perf_counter()
            seen["n"] += 1
            if seen["n"] >= expected:
                rate = seen["n"] / (time.perf_counter() - seen["first"])
                os.write(1, f"rate {rate:.1f}\n".encode())  # straight to fd 1: Faust redirects print()
                os._exit(0)

    app.finalize()
    faust.Worker(app, loglevel="WARNING", quiet=True, redirect_stdouts=False).execute_from_commandline()


if __name__ == "__main__":
    main()
