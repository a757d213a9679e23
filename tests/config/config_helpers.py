"""Helpers for the config tests: sample files, writing them, running `python -m wsgw`."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

GOOD_CONFIG = """\
gateway:
  listen: "127.0.0.1:9099"
tiers:
  Gold: {messages_per_minute: 600}
  Silver: {messages_per_minute: 60}
  Bronze: {messages_per_minute: 6}
  Unlimited: {}
apis:
  - name: Chat
    context: /chat
    version: "1.0"
    endpoints: {production: "ws://127.0.0.1:7001/chat"}
    tiers: [Gold, Silver]
"""

GOOD_SUBSCRIPTIONS = """\
applications:
  - name: MyApp
    keys:
      production:
        consumer_key: ck-prod
        consumer_secret_sha256: "%s"
    subscriptions:
      - {api: Chat, version: "1.0", tier: Gold}
""" % ("ab" * 32)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def run_wsgw(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "wsgw", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
