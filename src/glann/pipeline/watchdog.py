"""A job stops with the snakemake process that started it.

A kill -9 of snakemake leaves its running jobs to finish as orphans: their outputs are then
recorded as incomplete and recomputed by the rerun, and each finished orphan leaves an MLflow
run the rerun duplicates. A job that stops with its snakemake writes nothing (outputs are
atomic), keeps its last epoch in ``.resume``, and marks its run KILLED.
"""

from __future__ import annotations

import logging
import os
import time

log = logging.getLogger("glann")

SNAKEMAKE_PID_ENV = "GLANN_SNAKEMAKE_PID"  # the snakemake process a job stops with


def export_snakemake_pid() -> None:
    """Name this snakemake process to the jobs it starts (host, pid, start time; called by
    workflow/rules/common.smk): they stop once it is gone (kill -9). The start time tells a
    reused pid from it."""
    import socket

    import psutil

    os.environ[SNAKEMAKE_PID_ENV] = f"{socket.gethostname()}:{os.getpid()}:{psutil.Process().create_time()!r}"


def die_with_snakemake(interval: float = 0.5) -> None:
    """Stop this job (as Ctrl-C would) once the snakemake process that started it is gone. The snakemake process
    is named by host, pid and start time (export_snakemake_pid); a job on another host
    (an environment passed on to a cluster node) has nothing to watch."""
    try:
        host, pid, born = os.environ[SNAKEMAKE_PID_ENV].rsplit(":", 2)
        pid, born = int(pid), float(born)
    except (KeyError, ValueError):
        return
    import socket

    if host != socket.gethostname():
        return
    import signal
    import threading

    import psutil

    # A job started by a snakemake that runs in the background of a non-interactive shell (nohup
    # ... &) inherits SIGINT ignored, and Python then installs no KeyboardInterrupt handler: the
    # SIGINT below would do nothing and the job would run on as an orphan.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def alive() -> bool:
        try:
            p = psutil.Process(pid)
            return abs(p.create_time() - born) < 0.01 and p.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    def watch():
        while alive():
            time.sleep(interval)
        log.error("the snakemake process %s that started this job is gone: stopping (the rerun redoes it)", pid)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=watch, name="die-with-snakemake", daemon=True).start()
