"""`wsgw serve --workers N`: N gateway processes on one port (SO_REUSEPORT), supervised.

The kernel spreads new connections over the workers. Limits are per process unless they
are shared through Redis, so N > 1 with any limit configured needs `gateway.redis_url`:
without it, the command refuses to start rather than multiply every limit by N.
Worker i serves the admin API on admin port + i (port 0 stays 0), so each is scraped alone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time

from wsgw.config.models import GatewayConfig

log = logging.getLogger("wsgw.workers")

RESTART_BACKOFF_S = (0.5, 1.0, 2.0, 5.0)


def limits_configured(config: GatewayConfig) -> list[str]:
    """Names of tiers that set a limit a single process could not enforce alone."""
    return [
        name
        for name, tier in config.tiers.items()
        if tier.messages_per_minute or tier.bytes_per_minute or tier.max_connections
    ]


def check_workers(config: GatewayConfig, workers: int) -> str | None:
    """Why `workers` processes cannot run this config, or None."""
    if workers < 1:
        return "--workers must be at least 1"
    if workers > 1 and config.gateway.redis_url is None:
        limited = limits_configured(config)
        if limited:
            return (
                f"--workers {workers} needs gateway.redis_url: tiers {', '.join(limited)} set "
                "limits that each worker would otherwise enforce on its own "
                f"(letting {workers}x through). Set gateway.redis_url or use --workers 1."
            )
    return None


def run_workers(config: GatewayConfig, workers: int, run_one) -> int:  # noqa: ANN001
    """Fork `workers` children running `run_one(index)`; restart crashed ones; forward
    SIGTERM/SIGINT and wait for all to exit. Returns 0 when every worker stopped cleanly."""
    children: dict[int, int] = {}  # pid → worker index
    restarts = [0] * workers
    stopping = False

    def spawn(index: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the worker handles it
            code = 1
            try:
                code = run_one(index)
            finally:
                os._exit(code)
        children[pid] = index

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:  # SIGTERM drains, SIGINT stops at once: each worker decides
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def forward(signum: int, _frame: object) -> None:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, forward)  # each worker reloads its files
    for index in range(workers):
        spawn(index)
    log.info("started %d workers: %s", workers, " ".join(map(str, children)))
    status = 0
    while children:
        try:
            pid, wait_status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        index = children.pop(pid, -1)
        if index < 0:
            continue
        code = os.waitstatus_to_exitcode(wait_status)
        if stopping:
            status = status or (code if code > 0 else 0)
            continue
        if code == 0:  # it drained and stopped (POST /drain at its admin port): not a crash
            log.info("worker %d (pid %d) stopped", index, pid)
            continue
        delay = RESTART_BACKOFF_S[min(restarts[index], len(RESTART_BACKOFF_S) - 1)]
        log.error("worker %d (pid %d) exited with %d; restarting in %.1fs", index, pid, code, delay)
        restarts[index] += 1
        time.sleep(delay)
        if not stopping:
            spawn(index)
    sys.stdout.flush()
    return status
