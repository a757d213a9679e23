"""`python -m wsgw client` as a child process, lines piped on stdin, against real servers:
the in-process echo backend and small websockets servers that record or refuse."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from .tools_proc import run_wsgw

TIMEOUT = 5.0

Handler = Callable[[ServerConnection], Awaitable[None]]


@asynccontextmanager
async def ws_server(handler: Handler, **kwargs: object) -> AsyncIterator[int]:
    async with serve(handler, "127.0.0.1", 0, **kwargs) as server:  # type: ignore[arg-type]
        yield server.sockets[0].getsockname()[1]


async def echo_handler(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


async def test_lines_go_out_as_text_and_replies_are_printed(start_echo) -> None:
    port = await start_echo(prefix="E:")
    code, out, err = await run_wsgw(
        "client", f"ws://127.0.0.1:{port}/", stdin=b"one\ntwo\r\n\nlast without newline"
    )
    assert out == "< E:one\n< E:two\n< E:\n< E:last without newline\n"
    assert f"connected to ws://127.0.0.1:{port}/ (subprotocol: none)" in err
    assert err.rstrip().endswith("closed: 1000")
    assert code == 0


async def test_stdin_may_be_a_regular_file(start_echo, tmp_path) -> None:
    port = await start_echo()
    lines = [f"line {i} ünïcode" for i in range(200)]
    source = tmp_path / "in.txt"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with source.open("rb") as stdin_file:
        code, out, err = await run_wsgw("client", f"ws://127.0.0.1:{port}/", stdin_file=stdin_file)
    assert out.splitlines() == [f"< {line}" for line in lines]
    assert code == 0, err


async def test_empty_stdin_just_closes_cleanly(echo_port: int) -> None:
    code, out, err = await run_wsgw("client", f"ws://127.0.0.1:{echo_port}/", stdin=b"")
    assert (code, out) == (0, "")
    assert "closed: 1000" in err


async def test_token_and_headers_are_sent_and_the_token_never_printed() -> None:
    seen: list[Request] = []

    def record(connection: ServerConnection, request: Request) -> None:
        seen.append(request)

    async with ws_server(echo_handler, process_request=record) as port:
        code, out, err = await run_wsgw(
            "client",
            f"ws://127.0.0.1:{port}/chat/1.0?access_token=s3cr3t&room=7",
            "--token",
            "s3cr3t",
            "-H",
            "X-Trace: abc 123",
            "-H",
            "X-Empty:",
            stdin=b"hi\n",
        )
    assert code == 0, err
    assert out == "< hi\n"
    [request] = seen
    assert request.headers["Authorization"] == "Bearer s3cr3t"
    assert request.headers["X-Trace"] == "abc 123"
    assert request.headers["X-Empty"] == ""
    assert request.path == "/chat/1.0?access_token=s3cr3t&room=7"
    assert "s3cr3t" not in out + err
    assert "access_token=***&room=7" in err


async def test_subprotocols_are_offered_and_the_chosen_one_reported(start_echo) -> None:
    port = await start_echo(subprotocols=["chat.v2"])
    code, out, err = await run_wsgw(
        "client",
        f"ws://127.0.0.1:{port}/",
        "--subprotocol",
        "chat.v1",
        "--subprotocol",
        "chat.v2",
        stdin=b"x\n",
    )
    assert "(subprotocol: chat.v2)" in err
    assert (code, out) == (0, "< x\n")


async def test_refusal_shows_status_and_json_body_and_exits_1() -> None:
    body = json.dumps({"error": "forbidden", "message": "not subscribed to Chat:1.0"}).encode()

    def refuse(connection: ServerConnection, request: Request) -> Response:
        headers = Headers(
            [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        )
        return Response(403, "Forbidden", headers, body)

    async with ws_server(echo_handler, process_request=refuse) as port:
        code, out, err = await run_wsgw(
            "client", f"ws://127.0.0.1:{port}/", "--token", "t0k", stdin=b"never sent\n"
        )
    assert code == 1
    assert out == ""
    assert "HTTP 403 Forbidden" in err
    assert body.decode() in err
    assert "t0k" not in err


@pytest.mark.parametrize(("close_code", "status"), [(1000, 0), (1001, 0), (4000, 1), (1011, 1)])
async def test_server_closing_first_sets_the_exit_status(close_code: int, status: int) -> None:
    echoed: list[int | None] = []

    async def greet_then_close(ws: ServerConnection) -> None:
        await ws.send("welcome")
        await ws.close(close_code, "server says bye")
        echoed.append(ws.close_code)  # the code of the client's answering close frame

    async with ws_server(greet_then_close) as port:
        # stdin stays open: the server's close alone must end the client
        code, out, err = await run_wsgw("client", f"ws://127.0.0.1:{port}/", stdin=None)
    assert out == "< welcome\n"
    assert echoed == [close_code]
    assert f"closed: {close_code} server says bye" in err
    assert code == status


async def test_binary_and_multiline_messages_print_as_one_line_each() -> None:
    async def send_some(ws: ServerConnection) -> None:
        await ws.send(b"\x00\x01\xff")
        await ws.send(bytes(range(40)))
        await ws.send(b"")
        await ws.send("two\nlines")
        await ws.close()

    async with ws_server(send_some) as port:
        code, out, err = await run_wsgw("client", f"ws://127.0.0.1:{port}/", stdin=None)
    assert out.splitlines() == [
        "< [binary 3 bytes] 0001ff",
        "< [binary 40 bytes] " + bytes(range(32)).hex() + "...",
        "< [binary 0 bytes]",
        "< two\\nlines",
    ]
    assert code == 0, err


async def test_invalid_utf8_from_the_server_is_refused_with_1007() -> None:
    server_saw: list[int | None] = []

    async def send_garbage(ws: ServerConnection) -> None:
        await ws.send(b"ok", text=True)
        await ws.send(b"\xff\xfe", text=True)  # websockets sends bytes as text unchecked
        await ws.wait_closed()
        server_saw.append(ws.close_code)

    async with ws_server(send_garbage) as port:
        code, out, err = await run_wsgw("client", f"ws://127.0.0.1:{port}/", stdin=None)
    assert out == "< ok\n"
    assert "closed: 1007" in err
    assert code == 1
    assert server_saw == [1007]


@pytest.mark.parametrize(
    "argv",
    [
        ["-H", "no colon here"],
        ["-H", "Bad Name: v"],
        ["-H", ": v"],
        ["--token", "a", "-H", "Authorization: Basic x"],
        ["--subprotocol", "a b"],
    ],
)
async def test_bad_arguments_exit_2(echo_port: int, argv: list[str]) -> None:
    code, out, err = await run_wsgw("client", f"ws://127.0.0.1:{echo_port}/", *argv, stdin=b"")
    assert code == 2
    assert out == "" and "wsgw client:" in err and "connected" not in err


async def test_nothing_listening_exits_1() -> None:
    import socket

    with socket.socket() as probe:  # a port that was free a moment ago
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code, out, err = await run_wsgw("client", f"ws://127.0.0.1:{port}/", stdin=b"")
    assert code == 1
    assert "cannot connect" in err


async def test_not_a_websocket_url_exits_2() -> None:
    code, _, err = await run_wsgw("client", "http://127.0.0.1:1/", stdin=b"")
    assert code == 2
    assert "ws://" in err
