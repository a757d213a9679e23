"""One gateway-like process for the cluster tests (run as a script, one OS process each).

Modes:
  admit       ClusterLimits + Limit on KEY; from START_AT (wall clock) for DURATION seconds,
              admit messages as fast as it can; prints one JSON line with the count.
  hold-conns  take COUNT connection slots of KEY (cap COUNT), print "held", then wait to be
              killed (a crashed process: no stop(), no release).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

from wsgw._core import ACTION_DROP, Gate, Limit
from wsgw.pipeline.cluster import ClusterLimits


async def admit(args: argparse.Namespace) -> None:
    cluster = ClusterLimits(args.url, "open", key_prefix=args.prefix)
    await cluster.start()
    limit = Limit(args.mpm, 0, 0)
    gate = Gate([(limit, ACTION_DROP, 0)])
    await asyncio.sleep(max(0.0, args.start_at - time.time()))
    started = time.time()
    cluster.attach(args.key, limit)  # the shared bucket is born (full) with the first lease
    end = args.start_at + args.duration
    admitted = refused = 0
    steady_from = args.start_at + 1.0  # the initial bucket is long spent by then
    at_steady = None
    while time.time() < end:
        if at_steady is None and time.time() >= steady_from:
            at_steady = admitted
        now = time.monotonic_ns()
        while gate.admit(16, now) == 0:
            admitted += 1
        refused += 1
        await asyncio.sleep(0.002)  # yield to the lease loop; hungry again right after
    stopped = time.time()
    healthy = cluster.healthy
    processes = cluster.processes
    await cluster.stop()
    print(
        json.dumps(
            {
                "admitted": admitted,
                "refused": refused,
                "steady": admitted - (at_steady or 0),
                "started": started,
                "stopped": stopped,
                "healthy": healthy,
                "processes": processes,
            }
        ),
        flush=True,
    )


async def hold_connections(args: argparse.Namespace) -> None:
    cluster = ClusterLimits(
        args.url, "closed", key_prefix=args.prefix, heartbeat_ttl_s=args.heartbeat_ttl
    )
    await cluster.start()
    for _ in range(args.count):
        if not await cluster.acquire_connection(args.key, args.count):
            print("refused", flush=True)
            return
    print("held", flush=True)
    await asyncio.sleep(60)  # killed long before


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["admit", "hold-conns"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--mpm", type=int, default=600)
    parser.add_argument("--start-at", type=float, default=0.0)
    parser.add_argument("--duration", type=float, default=6.0)
    parser.add_argument("--count", type=int, default=2)
    parser.add_argument("--heartbeat-ttl", type=float, default=0.6)
    args = parser.parse_args()
    run = admit if args.mode == "admit" else hold_connections
    asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
