"""The one way every job reaches Ray (`lightwork.distributed.cluster.connect`).

Attach or start: a process given RAY_ADDRESS, or started by `ray job submit` (which sets it),
attaches with a plain `ray.init()` (asking for resources there raises); any other starts a local
instance with `num_cpus` logical CPUs. Console: unless `verbose`, the output of Ray's worker and
actor processes (core_worker warnings about restarted actors, Ray Data's per-dataset logging
notices, Train's per-checkpoint lines, the trial drivers' own prints) stays in Ray's log files
(`session_latest/logs` of Ray's temporary folder) instead of being copied to the console
(`ray.init(log_to_driver=False)`), and the driver's own notices in `QUIET_LOGGERS` and Ray
Data's console lines and Tune's experiment banner are not printed (Ray's log files keep the
lines); the driver itself prints a line per fold epoch and per finished fold
(`lightwork.distributed.train`, with Tune's status tables off) and the summary.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

# Ray's notices in the driver that tell a lightwork user nothing they can act on, off the console
# unless --verbose: that Ray turned token authentication on for the local instance it started, and
# Tune's "The `x` operation took 1.6 s, which may be a performance bottleneck" on a busy machine,
# and its "Wrote the latest version of all result files" at the end of a fit.
QUIET_LOGGERS = ("ray._private.authentication.authentication_token_setup", "ray.tune.utils.util", "ray.tune.tune")
# Ray Train settings of a local instance lightwork starts (a cluster it attaches to keeps its own),
# set in the environment its processes inherit unless the user set them: the controller polls its
# workers every 0.5 s instead of 2 s (a fold's end, and its first report, are seen sooner: each
# fold paid up to two 2-second waits), and no preemption watcher actor starts per fold (a
# workstation's nodes are not preempted; on a cloud cluster Ray's default stays).
LOCAL_TRAIN_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5", "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}


def connect(num_cpus: int | None = None, verbose: bool = False) -> bool:
    """Attach to this process's Ray cluster or start a local one (see the module docstring).

    Returns True when this call started Ray (the caller shuts it down), False when Ray was
    already initialised in this process.
    """
    import ray

    if ray.is_initialized():
        return False
    quiet = {} if verbose else {"log_to_driver": False}
    if not verbose:
        _quiet_console()
    if os.environ.get("RAY_ADDRESS"):
        ray.init(**quiet)
    else:
        for name, value in LOCAL_TRAIN_ENV.items():
            os.environ.setdefault(name, value)
        # "local": a new instance even where another runs on this machine (a `ray start` head,
        # another user's job), which a plain ray.init() would join, refusing `num_cpus`.
        ray.init(address="local", num_cpus=num_cpus, **quiet)
    return True


def _quiet_console() -> None:
    """Ray's notices off the driver's console (`QUIET_LOGGERS`), and Ray Data's console handler
    at ERROR: its per-dataset execution lines, progress log (printed where stdout is not a
    terminal) and resource advice still go to `logs/ray-data/ray-data.log` of Ray's session.
    Tune's console reporter is its classic one, which at verbosity 0 prints nothing (the new one
    prints an experiment banner and paths whatever the verbosity)."""
    import ray.data  # noqa: F401  (configures Ray Data's loggers)

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    for handler in logging.getLogger("ray.data").handlers:
        if handler.get_name() == "console":
            handler.setLevel(logging.ERROR)


@contextlib.contextmanager
def connected(num_cpus: int | None = None, verbose: bool = False) -> Iterator[None]:
    """`connect` for the duration of a `with` block; shuts Ray down after it when it started it."""
    import ray

    started = connect(num_cpus, verbose)
    try:
        yield
    finally:
        if started:
            ray.shutdown()
