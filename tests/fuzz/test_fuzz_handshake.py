"""Fuzz the handshake checks (wsgw/pipeline/handshake.py, compression.py): a client's
upgrade request and a backend's answer are accepted or refused with a GatewayError, and
what the gateway sends on (to the backend, to the client) passes the same checks."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from . import harness
from .fuzzing import fuzz, inputs, run, seed_bytes

NEEDS = st.sampled_from(harness.NEEDS)


@fuzz
@given(inputs(seed_bytes("handshake", "req-") + seed_bytes("http", "upgrade")), NEEDS)
def test_client_upgrade(data: bytes, need: harness.SelfContained) -> None:
    run(harness.check_client_handshake, data, need)


@fuzz
@given(
    inputs(seed_bytes("handshake", "resp-") + seed_bytes("response", "101")),
    st.lists(st.sampled_from(harness.SUBPROTOCOLS), unique=True).map(tuple),
    st.lists(st.sampled_from(harness.OFFERS), max_size=2).map(tuple),
    NEEDS,
)
def test_backend_answer(
    data: bytes,
    subprotocols: tuple[str, ...],
    extensions: tuple[str, ...],
    need: harness.SelfContained,
) -> None:
    run(harness.check_backend_handshake, data, subprotocols, extensions, need)


PARAMS = st.sampled_from(
    [
        "permessage-deflate",
        "server_no_context_takeover",
        "client_no_context_takeover",
        "client_max_window_bits",
        "server_max_window_bits=10",
        ";",
        "=",
        ",",
        " ",
        '"',
        "SERVER_NO_CONTEXT_TAKEOVER",
    ]
)
EXTENSION_TEXT = st.one_of(
    st.text(max_size=60),
    st.lists(st.one_of(PARAMS, st.text(max_size=4)), max_size=8).map("; ".join),
    st.lists(PARAMS, max_size=8).map("".join),
)


@fuzz
@given(EXTENSION_TEXT, NEEDS)
def test_compression_parameters(text: str, need: harness.SelfContained) -> None:
    run(harness.check_compression, text, need)


def test_handshake_corpus() -> None:
    for name, data in harness.seeds("handshake"):
        run(harness.run_one, "handshake", data, name)
        for need in harness.NEEDS:
            if name.startswith("resp-"):
                run(harness.check_backend_handshake, data, ("chat",), harness.OFFERS[:1], need)
            else:
                run(harness.check_client_handshake, data, need)
