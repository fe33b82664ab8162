"""CPU priority of the project's processes on shared cores: queries go before ingest.

Linux gives each thread its own niceness; a thread may lower its priority but, unprivileged,
never raise it back. A process that is all batch work (a pipeline's actor) lowers every thread
it has (:func:`lower_priority`); one that must stay responsive (the service's) keeps its own.
"""

from __future__ import annotations

import os


def _set_nice(tid: int, nice: int) -> None:
    try:
        if os.getpriority(os.PRIO_PROCESS, tid) < nice:
            os.setpriority(os.PRIO_PROCESS, tid, nice)
    except OSError:  # the thread ended meanwhile, or a platform without per-thread priorities
        pass


def lower_priority(nice: int) -> None:
    """Run this process at niceness ``nice`` (every thread it has now; threads started later take
    their starter's), unless it already runs lower."""
    tasks = "/proc/self/task"
    for tid in (int(t) for t in os.listdir(tasks)) if os.path.isdir(tasks) else [0]:
        _set_nice(tid, nice)
