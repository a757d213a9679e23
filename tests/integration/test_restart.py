"""A restart with two processes on one port (SO_REUSEPORT) loses no handshake.

Gateway A serves a load of short connections (and a few held open); gateway B starts on
the same port with `--reuse-port`; A gets SIGTERM: it closes its listener at once (the
kernel gives every new connection to B), serves what it had accepted, closes the held
connections with 1001 after its drain and exits 0. No handshake may fail meanwhile.

Linux resets the connections queued at a listener that closes unless
net.ipv4.tcp_migrate_req is 1 (kernel 5.14 and later), which moves them to another
listener of the group. The scenario runs in a network namespace of its own, where that
sysctl is set without touching the host's (the run needs root, or CAP_SYS_ADMIN and
CAP_NET_ADMIN: skipped otherwise). The figure without it, to compare:

    unshare --net -- sh -c 'ip link set lo up && sysctl -q -w net.ipv4.tcp_migrate_req=0 \
        && exec python tests/integration/restart_scenario.py --dir /tmp/restart --pause-s 0.3'
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

SCENARIO = Path(__file__).with_name("restart_scenario.py")
NAMESPACE_SETUP = "ip link set lo up && sysctl -q -w net.ipv4.tcp_migrate_req={migrate}"
RUN_TIMEOUT_S = 40.0
DRAIN_S = 1.0
WINDOW_S = 1.0
BUSY_S = 0.3


def in_namespace(migrate: int, *argv: str, timeout_s: float) -> subprocess.CompletedProcess[str]:
    """Run argv in a new network namespace whose loopback is up and whose
    tcp_migrate_req is `migrate`."""
    script = NAMESPACE_SETUP.format(migrate=migrate) + ' && exec "$@"'
    return subprocess.run(
        ["unshare", "--net", "--", "sh", "-c", script, "sh", *argv],
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


@pytest.fixture(scope="module")
def namespaces() -> None:
    missing = [tool for tool in ("unshare", "ip", "sysctl") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)}")
    probe = in_namespace(1, "true", timeout_s=10)
    if probe.returncode != 0:
        pytest.skip(
            "cannot make a network namespace with tcp_migrate_req=1 (root or CAP_SYS_ADMIN, "
            f"kernel >= 5.14): {probe.stderr.strip()}"
        )


def restart(
    tmp_path: Path, *, workers: int, clients: int, holders: int, pause_s: float
) -> dict[str, Any]:
    done = in_namespace(
        1,
        sys.executable,
        str(SCENARIO),
        "--dir",
        str(tmp_path / "scenario"),
        "--workers",
        str(workers),
        "--clients",
        str(clients),
        "--holders",
        str(holders),
        "--pause-s",
        str(pause_s),
        "--drain-s",
        str(DRAIN_S),
        "--window-s",
        str(WINDOW_S),
        timeout_s=RUN_TIMEOUT_S,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return summary


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("workers", "holders", "pause_s"),
    [(1, 8, BUSY_S), (1, 0, BUSY_S), (1, 0, 0.0), (2, 8, BUSY_S)],
    ids=["held-connections-busy", "short-only-busy", "short-only", "workers-2-busy"],
)
def test_a_restart_on_one_port_loses_no_handshake(
    namespaces: None, tmp_path: Path, workers: int, holders: int, pause_s: float
) -> None:
    """`-busy`: A's loop is held (SIGSTOP) for BUSY_S before its SIGTERM, so that its accept
    queue is full when it drains: without tcp_migrate_req those connections are reset
    (a few every run), and those A accepts as it resumes must be served, not refused."""
    clients = 8
    summary = restart(tmp_path, workers=workers, clients=clients, holders=holders, pause_s=pause_s)
    report = json.dumps(summary)  # the whole summary in any failure's message
    assert summary["tcp_migrate_req"] == "1"
    assert summary["workers"] == workers
    assert summary["pause_s"] == pause_s
    assert summary["failed"] == 0, report
    assert summary["other_errors"] == {}, report
    assert summary["succeeded"] > 200, report
    # Handshakes went on all through A's drain and after its exit (B took them).
    assert summary["succeeded_from_sigterm_to_a_exit_and_after"] > 50, report
    assert summary["a_exit"] == 0, report
    assert summary["b_exit"] == 0, report
    # The held connections were A's (opened before B started): its drain closed each with
    # 1001 once drain_s was over; their clients connected again (to B).
    assert holders <= summary["closed_by_drain"] <= holders + clients, report
    if holders:
        assert DRAIN_S <= summary["a_exit_after_sigterm_s"] < DRAIN_S + WINDOW_S + 2, report
        assert summary["held_messages"] > holders * 10, report
    else:
        assert summary["a_exit_after_sigterm_s"] < 2, report
    assert summary["tracebacks"] == [], report
    assert summary["a_log_warnings"] == [], summary  # no tcp_migrate_req warning with it on
