"""Log lines for events that can repeat by the thousand (timeouts, refusals, failures).

A probe that opens 10,000 connections and sends nothing must not write 10,000 lines:
:class:`Throttled` writes the first occurrence of an event, counts the ones that follow
for ``interval_s``, and then writes one summary line, e.g.::

    request from 203.0.113.7 timed out
    request from 203.0.113.7 timed out ... and 11499 more in the last 60 s

An event is a key: by default the call's format string (so one call site is one event,
whatever its arguments). The summary is written when the interval ends: by a timer on the
running asyncio loop when there is one (or the ``schedule`` given), else at the next
occurrence after the interval, or at :meth:`Throttled.flush`. A steady flood is two lines
per interval and key.

Memory is bounded: at most ``max_keys`` events are tracked; past that, new keys share one
window, logged as "(more log lines like this)".
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["Throttled", "throttled"]

DEFAULT_INTERVAL_S = 60.0
DEFAULT_MAX_KEYS = 256
SUMMARY = " ... and %d more in the last %g s"
_OVERFLOW = object()  # the key shared by events past max_keys


class _Handle(Protocol):
    def cancel(self) -> None: ...


Schedule = Callable[[float, Callable[[], None]], "_Handle | None"]


def loop_schedule(delay_s: float, callback: Callable[[], None]) -> _Handle | None:
    """call_later on the running asyncio loop; None (no timer) outside of one."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    return loop.call_later(delay_s, callback)


class _Window:
    __slots__ = ("start", "level", "msg", "args", "suppressed", "timer")

    def __init__(self, start: float, level: int, msg: str, args: tuple[Any, ...]) -> None:
        self.start = start
        self.level = level
        self.msg = msg
        self.args = args
        self.suppressed = 0
        self.timer: _Handle | None = None


class Throttled:
    """Writes through ``logger`` at most one line per key per ``interval_s``, plus a summary
    of what it held back. Not thread-safe (asyncio: one thread)."""

    def __init__(
        self,
        logger: logging.Logger,
        interval_s: float = DEFAULT_INTERVAL_S,
        *,
        clock: Callable[[], float] = time.monotonic,
        schedule: Schedule | None = loop_schedule,
        max_keys: int = DEFAULT_MAX_KEYS,
    ) -> None:
        if interval_s <= 0 or max_keys < 1:
            raise ValueError("interval_s must be > 0 and max_keys >= 1")
        self.logger = logger
        self.interval_s = interval_s
        self.clock = clock
        self.schedule = schedule
        self.max_keys = max_keys
        self._windows: dict[object, _Window] = {}

    # ----------------------------------------------------------------- logging
    def log(self, level: int, msg: str, *args: Any, key: object = None) -> bool:
        """Log ``msg % args`` unless the same key was logged less than interval_s ago.
        True if the line was written now."""
        return self._log(level, msg, args, key, 3)

    def debug(self, msg: str, *args: Any, key: object = None) -> bool:
        return self._log(logging.DEBUG, msg, args, key, 3)

    def info(self, msg: str, *args: Any, key: object = None) -> bool:
        return self._log(logging.INFO, msg, args, key, 3)

    def warning(self, msg: str, *args: Any, key: object = None) -> bool:
        return self._log(logging.WARNING, msg, args, key, 3)

    def error(self, msg: str, *args: Any, key: object = None) -> bool:
        return self._log(logging.ERROR, msg, args, key, 3)

    def _log(
        self, level: int, msg: str, args: tuple[Any, ...], key: object, stacklevel: int
    ) -> bool:
        # stacklevel: the record names the caller's file and line, not this module's.
        if not self.logger.isEnabledFor(level):
            return False
        if key is None:
            key = msg
        now = self.clock()
        window = self._current(key, now)
        if window is None and len(self._windows) >= self.max_keys:
            self._close_expired(now)
            if len(self._windows) >= self.max_keys:
                key = _OVERFLOW
                window = self._current(key, now)
                if window is None:
                    msg += " (more log lines like this)"
        if window is None:
            self._windows[key] = _Window(now, level, msg, args)
            self.logger.log(level, msg, *args, stacklevel=stacklevel)
            return True
        window.suppressed += 1
        if window.suppressed == 1 and self.schedule is not None:
            delay = max(0.0, window.start + self.interval_s - now)
            window.timer = self.schedule(delay, lambda: self._expire(key, window))
        return False

    # ---------------------------------------------------------------- windows
    def flush(self) -> None:
        """End every window now, writing the summaries still due (e.g. at shutdown)."""
        now = self.clock()
        for key, window in list(self._windows.items()):
            self._close(key, window, now)

    def reset(self) -> None:
        """Forget every window without writing anything (tests)."""
        for window in self._windows.values():
            if window.timer is not None:
                window.timer.cancel()
        self._windows.clear()

    @property
    def tracked(self) -> int:
        return len(self._windows)

    def _current(self, key: object, now: float) -> _Window | None:
        """The key's open window; one whose interval is over is closed first."""
        window = self._windows.get(key)
        if window is not None and now - window.start >= self.interval_s:
            self._close(key, window, now)
            return None
        return window

    def _expire(self, key: object, window: _Window) -> None:
        """The timer at the end of a window: the window ends, its summary is written."""
        if self._windows.get(key) is window:
            window.timer = None
            self._close(key, window, self.clock())

    def _close_expired(self, now: float) -> None:
        for key, window in list(self._windows.items()):  # bounded: at most max_keys + 1
            if now - window.start >= self.interval_s:
                self._close(key, window, now)

    def _close(self, key: object, window: _Window, now: float) -> None:
        del self._windows[key]
        if window.timer is not None:
            window.timer.cancel()
            window.timer = None
        if window.suppressed:
            self.logger.log(
                window.level,
                window.msg + SUMMARY,
                *window.args,
                window.suppressed,
                round(max(now - window.start, 0.0), 1),
            )


_registry: dict[str, Throttled] = {}


def throttled(logger: logging.Logger, interval_s: float = DEFAULT_INTERVAL_S) -> Throttled:
    """The process's Throttled for ``logger`` (created on first use, like getLogger):
    ``throttled(log).info("request from %s timed out", peer)``. Log volume is a property
    of the process, so is this state. ``interval_s`` applies when it is created."""
    found = _registry.get(logger.name)
    if found is None:
        found = _registry[logger.name] = Throttled(logger, interval_s)
    return found
