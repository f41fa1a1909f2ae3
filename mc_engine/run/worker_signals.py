"""Dask preload for local worker processes: ignore SIGINT.

A terminal's Ctrl-C goes to the whole process group, local workers included. Ignoring it there
lets only the client stop: it writes what it has received and shuts the workers down in order,
instead of every worker dying with a traceback of its own. Imported by each worker process at
start-up (``distributed.worker.preload``), before the worker runs any task.
"""

import signal

signal.signal(signal.SIGINT, signal.SIG_IGN)
