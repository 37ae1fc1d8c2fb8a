"""``python -m stream.alerts {alerter,pager,ack,silence}``: the alerting subcommands of ``vitalrisk``.

Kept so that tests and the benchmark can start the processes by module; the command line itself
lives in :mod:`stream.cli`, once.
"""

from __future__ import annotations

import sys

from stream.cli import main

if __name__ == "__main__":
    sys.exit(main())
