"""Hostile bodies on the webhook routes (unbounded bodies, slow clients), through raw sockets to the
shared Rasa server: huge bodies are refused before they are buffered, slow ones are cut off."""

from __future__ import annotations

import socket
import threading
import time
from typing import List, Tuple

import psutil
import pytest

from connectors.http_limits import BODY_DEADLINE_SECONDS, HEADER_DEADLINE_SECONDS

pytestmark = pytest.mark.rasa_server

HUGE = 95 * 1024 * 1024
CHUNK = b"x" * (1024 * 1024)


def _status(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/1.1 ") else 0


def _push_huge_body(port: int, path: str, headers: str) -> Tuple[int, int]:
    """Sends headers announcing 95 MB, then body bytes until the server answers or closes.
    Returns (status, bytes of body the server took before refusing)."""
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {HUGE}\r\n{headers}\r\n".encode()
        )
        sock.setblocking(False)
        reply = b""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and sent < HUGE:
            try:
                reply += sock.recv(65536)
                if reply:
                    break
            except BlockingIOError:
                pass
            try:
                sent += sock.send(CHUNK)
            except BlockingIOError:
                time.sleep(0.01)
            except (BrokenPipeError, ConnectionResetError):
                break
        sock.setblocking(True)
        if not reply:
            try:
                reply = sock.recv(65536)
            except OSError:
                pass
    return _status(reply), sent


@pytest.mark.parametrize(
    "path, headers, expected",
    [
        ("/webhooks/vapi/events", "Content-Type: application/json\r\n", 413),
        ("/webhooks/vapi/chat/completions", "Authorization: Bearer wrong\r\n", 401),
        ("/webhooks/vapi/chat/completions", "Authorization: Bearer {secret}\r\n", 413),
        ("/webhooks/twilio_sms/webhook", "X-Twilio-Signature: x\r\n", 413),
        ("/webhooks/webchat/session", "", 413),
    ],
)
def test_ten_huge_bodies_are_refused_before_they_are_buffered(
    rasa_stack, path: str, headers: str, expected: int
) -> None:
    server = psutil.Process(rasa_stack.rasa_proc.pid)
    before = server.memory_info().rss
    results: List[Tuple[int, int]] = []
    headers = headers.format(secret=rasa_stack.env["VAPI_SERVER_SECRET"])

    def push() -> None:
        results.append(_push_huge_body(rasa_stack.rasa_port, path, headers))

    threads = [threading.Thread(target=push) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    growth = server.memory_info().rss - before

    assert [status for status, _ in results] == [expected] * 10
    # The server stops reading at once: what it took is what sat in socket buffers.
    assert max(sent for _, sent in results) < 16 * 1024 * 1024
    assert growth < 40 * 1024 * 1024, f"RSS grew by {growth / 2**20:.0f} MiB"


def test_a_chunked_body_stops_at_the_route_limit(rasa_stack) -> None:
    with socket.create_connection(("127.0.0.1", rasa_stack.rasa_port), timeout=15) as sock:
        sock.sendall(
            b"POST /webhooks/twilio_sms/webhook HTTP/1.1\r\nHost: x\r\n"
            b"Transfer-Encoding: chunked\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\nX-Twilio-Signature: x\r\n\r\n"
        )
        reply = b""
        try:
            for _ in range(64):  # 64 x 16 KiB: four times the 64 KiB limit
                sock.sendall(b"4000\r\n" + b"a" * 0x4000 + b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        reply = sock.recv(65536)
    assert _status(reply) == 413


def test_a_stalled_body_is_cut_off_after_the_deadline(rasa_stack) -> None:
    """Full headers and 10 bytes of a 1,000-byte body, then nothing: before the fix the
    connection stayed open past 420 s."""
    with socket.create_connection(("127.0.0.1", rasa_stack.rasa_port), timeout=60) as sock:
        started = time.monotonic()
        sock.sendall(
            b"POST /webhooks/vapi/events HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n"
            b"Content-Type: application/json\r\n\r\n0123456789"
        )
        reply = sock.recv(65536)
        answered = time.monotonic() - started
        closed = sock.recv(65536) == b""
    assert _status(reply) == 408
    assert BODY_DEADLINE_SECONDS - 0.5 < answered < BODY_DEADLINE_SECONDS + 3
    assert closed, "the connection of a stalled body must be closed"


def test_headers_sent_a_byte_at_a_time_are_cut_off(rasa_stack) -> None:
    """Before: a header byte every 20 s kept 200 of 200 connections open. Here 20 connections
    trickle a byte every 2 s: all are closed at the head deadline. (Every SSE stream and chat
    socket of the suite runs under the same guard: a head that arrived frees the connection.)"""
    head = b"POST /webhooks/vapi/events HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 200
    sockets = [socket.create_connection(("127.0.0.1", rasa_stack.rasa_port)) for _ in range(20)]
    started = time.monotonic()
    closed_at: List[float] = []
    try:
        for index in range(len(head)):
            for sock in list(sockets):
                try:
                    sock.sendall(head[index : index + 1])
                    sock.setblocking(False)
                    if sock.recv(1) == b"":
                        raise ConnectionResetError
                except BlockingIOError:
                    pass
                except OSError:
                    closed_at.append(time.monotonic() - started)
                    sockets.remove(sock)
                finally:
                    sock.setblocking(True)
            if not sockets or time.monotonic() - started > HEADER_DEADLINE_SECONDS + 10:
                break
            time.sleep(2)
    finally:
        for sock in sockets:
            sock.close()
    assert len(closed_at) == 20, f"{20 - len(closed_at)} trickling connections still open"
    assert max(closed_at) < HEADER_DEADLINE_SECONDS + 5
