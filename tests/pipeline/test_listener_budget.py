"""The listeners' bookkeeping on its own: pending connections per address, the descriptor
limit raised at start and the reserve (the sockets are in tests/integration)."""

from __future__ import annotations

import logging
import resource

import pytest

from wsgw import fdlimits
from wsgw.fdlimits import FD_MARGIN, FdBudget, raise_nofile_limit
from wsgw.pipeline.pending import PendingConnections


class Conn:
    """A connection, as far as the pending count cares: something hashable."""


def test_pending_counts_per_address_and_forgets_addresses() -> None:
    pending = PendingConnections(2)
    a, b, c, d = Conn(), Conn(), Conn(), Conn()
    assert pending.enter(a, "10.0.0.1") and pending.enter(b, "10.0.0.1")
    assert not pending.enter(c, "10.0.0.1")  # the third from one address
    assert pending.enter(d, "10.0.0.2")
    assert pending.by_address == {"10.0.0.1": 2, "10.0.0.2": 1}
    assert (len(pending), pending.refused_total) == (3, 1)
    pending.leave(c)  # refused: never counted
    pending.leave(a)
    pending.leave(a)  # upgraded, then ended: counted down once
    assert pending.by_address == {"10.0.0.1": 1, "10.0.0.2": 1}
    assert pending.enter(c, "10.0.0.1")
    for conn in (b, c, d):
        pending.leave(conn)
    assert pending.by_address == {} and len(pending) == 0


def test_pending_ipv6_counts_per_64_and_unknown_peers_are_not_limited() -> None:
    pending = PendingConnections(1)
    assert pending.enter(Conn(), "2001:db8::1")
    assert not pending.enter(Conn(), "2001:db8::ffff:2")  # same /64
    assert pending.enter(Conn(), "2001:db8:0:1::1")
    assert pending.enter(Conn(), "?") and pending.enter(Conn(), "?")
    assert set(pending.by_address) == {"2001:db8::/64", "2001:db8:0:1::/64"}


def test_pending_zero_is_no_limit_but_still_counted() -> None:
    pending = PendingConnections(0)
    conns = [Conn() for _ in range(100)]
    assert all(pending.enter(conn, "10.0.0.1") for conn in conns)
    samples = {name: value for name, _, _, _, value in pending.collect()}
    assert samples == {"wsgw_pending_refused_total": 0, "wsgw_connections_pending": 100}


@pytest.fixture
def limits(monkeypatch: pytest.MonkeyPatch) -> dict[str, tuple[int, int]]:
    """RLIMIT_NOFILE as the code under test sees it (the test process's own is untouched)."""
    state = {"nofile": (1024, 524288)}

    def getrlimit(which: int) -> tuple[int, int]:
        assert which == resource.RLIMIT_NOFILE
        return state["nofile"]

    def setrlimit(which: int, value: tuple[int, int]) -> None:
        assert which == resource.RLIMIT_NOFILE
        if value[0] > value[1] or value[1] > state["nofile"][1]:
            raise ValueError("not allowed")
        state["nofile"] = value

    monkeypatch.setattr(fdlimits.resource, "getrlimit", getrlimit)
    monkeypatch.setattr(fdlimits.resource, "setrlimit", setrlimit)
    return state


def test_soft_limit_raised_to_hard_once(limits: dict, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "wsgw")
    assert raise_nofile_limit() == (1024, 524288)
    assert limits["nofile"] == (524288, 524288)
    assert raise_nofile_limit() == (524288, 524288)  # nothing to do: no second line
    lines = [r.getMessage() for r in caplog.records if "file descriptors" in r.getMessage()]
    assert lines == ["file descriptors: soft limit raised from 1024 to 524288"]


def test_soft_limit_never_lowered(limits: dict) -> None:
    limits["nofile"] = (4096, 4096)
    assert raise_nofile_limit() == (4096, 4096)
    limits["nofile"] = (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
    raise_nofile_limit()
    assert limits["nofile"] == (resource.RLIM_INFINITY, resource.RLIM_INFINITY)


def test_soft_limit_refused_is_a_warning(
    limits: dict, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(which: int, value: tuple[int, int]) -> None:
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(fdlimits.resource, "setrlimit", refuse)
    assert raise_nofile_limit() == (1024, 1024)
    assert "soft limit 1024 not raised to 524288" in caplog.text


class Transport:
    def __init__(self, fd: int) -> None:
        self.fd = fd

    def get_extra_info(self, name: str) -> object:
        assert name == "socket"
        return self

    def fileno(self) -> int:
        return self.fd


def test_reserve_is_the_admin_cap_plus_a_margin_at_most_a_quarter(limits: dict) -> None:
    limits["nofile"] = (20000, 20000)
    budget = FdBudget(64)
    assert (budget.limit, budget.reserve, budget.threshold) == (20000, 64 + FD_MARGIN, 19904)
    limits["nofile"] = (300, 300)
    budget.refresh()
    assert (budget.reserve, budget.threshold) == (75, 225)


async def test_a_client_on_a_reserved_descriptor_is_refused_and_logged_once(
    limits: dict, caplog: pytest.LogCaptureFixture
) -> None:
    limits["nofile"] = (1024, 1024)
    budget = FdBudget(64)
    assert not budget.short(Transport(927))
    assert budget.short(Transport(928)) and budget.short(Transport(1023))
    assert budget.exhausted_total == 2
    lines = [r for r in caplog.records if "file descriptors exhausted" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING
    assert "929 of 1024 in use (the last 96 are kept" in lines[0].getMessage()
    budget.close()  # the summary of what was held back
    assert "... and 1 more in the last" in caplog.records[-1].getMessage()
    samples = {name: value for name, _, _, _, value in budget.collect()}
    assert samples["wsgw_fd_exhausted_total"] == 2 and samples["wsgw_max_fds"] == 1024
    assert samples["wsgw_open_fds"] > 0
