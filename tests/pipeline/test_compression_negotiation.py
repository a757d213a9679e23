"""The permessage-deflate rewrite for directions whose messages a limit may drop."""

from __future__ import annotations

import pytest

from wsgw.errors import BadGateway
from wsgw.pipeline.compression import (
    AS_NEGOTIATED,
    SelfContained,
    answer_for_client,
    offers_for_backend,
    parameter_names,
    with_parameter,
)

BROWSER = "permessage-deflate; client_max_window_bits"
BOTH = SelfContained(client=True, backend=True)


def test_parameter_names_are_lower_cased_without_values() -> None:
    offer = "permessage-deflate; Client_Max_Window_Bits=10 ;server_no_context_takeover"
    assert parameter_names(offer) == ["client_max_window_bits", "server_no_context_takeover"]
    assert parameter_names("permessage-deflate") == []


def test_a_parameter_is_added_once() -> None:
    once = with_parameter(BROWSER, "server_no_context_takeover")
    assert once == BROWSER + "; server_no_context_takeover"
    assert with_parameter(once, "server_no_context_takeover") == once
    upper = "permessage-deflate; SERVER_NO_CONTEXT_TAKEOVER"
    assert with_parameter(upper, "server_no_context_takeover") == upper


def test_offers_ask_the_backend_only_when_its_messages_can_be_dropped() -> None:
    offers = (BROWSER, "permessage-deflate")
    assert offers_for_backend(offers, AS_NEGOTIATED) == offers
    assert offers_for_backend(offers, SelfContained(client=True)) == offers
    assert offers_for_backend(offers, SelfContained(backend=True)) == (
        BROWSER + "; server_no_context_takeover",
        "permessage-deflate; server_no_context_takeover",
    )


def test_the_client_is_told_to_compress_alone_only_when_its_messages_can_be_dropped() -> None:
    answer = "permessage-deflate; server_max_window_bits=12"
    assert answer_for_client(answer, AS_NEGOTIATED) == answer
    assert answer_for_client(answer, SelfContained(client=True)) == (
        answer + "; client_no_context_takeover"
    )


def test_a_backend_that_ignores_the_request_is_refused() -> None:
    with pytest.raises(BadGateway, match="server_no_context_takeover"):
        answer_for_client("permessage-deflate", SelfContained(backend=True))
    agreed = "permessage-deflate; server_no_context_takeover"
    assert answer_for_client(agreed, BOTH) == agreed + "; client_no_context_takeover"
