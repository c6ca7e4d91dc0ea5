"""Replies are bounded (issue 13 item 8): a size cap on every reply (Alma and the handle proxy), a nesting
cap on JSON, and a deadline for the whole exchange, against a misbehaving server on 127.0.0.1."""

from __future__ import annotations

import gzip
import threading
import time
import tracemalloc
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from orchestrator.alma.client import AlmaClient
from orchestrator.bounded import MB, JsonTooDeep, ReplyTooLarge, ReplyTooSlow, json_depth, load_json, send_bounded
from orchestrator.config import PrimoConfig
from orchestrator.domain.handles import Verdict
from orchestrator.errors import AlmaBadReplyError, AlmaUnreachableError
from orchestrator.resolver import Verifier, VerifyItem

CHUNK = b"x" * (64 * 1024)
SET_JSON = b'{"id": "1", "name": "ok"}'


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        mode = self.server.mode  # type: ignore[attr-defined]
        getattr(self, f"_{mode}")()

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.do_GET()

    def _head(self, length: int | None = None, encoding: str | None = None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if encoding:
            self.send_header("Content-Encoding", encoding)
        if length is None:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(length))
        self.end_headers()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _ok(self) -> None:
        self._head(len(SET_JSON))
        self.wfile.write(SET_JSON)

    def _huge(self) -> None:
        # 400 MB, chunked (no Content-Length to refuse up front): the client must stop reading at its cap.
        self._head()
        try:
            for _ in range(400 * MB // len(CHUNK)):
                self._chunk(CHUNK)
            self._chunk(b"")
        except OSError:
            pass

    def _huge_announced(self) -> None:
        self._head(400 * MB)  # announced, never sent: refused on the header alone

    def _gzip_bomb(self) -> None:
        body = gzip.compress(b" " * (64 * MB))
        self._head(len(body), encoding="gzip")
        self.wfile.write(body)

    def _drip(self) -> None:
        # One byte every 50 ms, for at most 10 s: each read is quick, the reply never completes in time.
        self._head(200)
        try:
            for _ in range(200):
                self.wfile.write(b" ")
                self.wfile.flush()
                time.sleep(0.05)
        except OSError:
            pass

    def _deep(self) -> None:
        body = b"[" * 200_000 + b"]" * 200_000
        self._head(len(body))
        self.wfile.write(body)


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.mode = "ok"  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def _url(httpd: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{httpd.server_address[1]}"


def _alma(httpd: ThreadingHTTPServer, **kwargs: object) -> AlmaClient:
    return AlmaClient(_url(httpd), "k", max_retries=0, requests_per_second=1000, **kwargs)  # type: ignore[arg-type]


def test_a_normal_reply_still_reads(server):
    with _alma(server) as alma:
        assert alma.get_set("1").name == "ok"


def test_huge_alma_reply_is_refused_with_memory_staying_low(server):
    server.mode = "huge"
    tracemalloc.start()
    try:
        with _alma(server) as alma, pytest.raises(AlmaBadReplyError) as caught:
            alma.get_set("1")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    message = str(caught.value)
    assert "larger than the 20 MB limit" in message and "alma.max_reply_mb" in message and "\n" not in message
    assert peak < 50 * MB, f"peak {peak / MB:.0f} MB while refusing a 400 MB reply"


def test_announced_huge_reply_is_refused_before_reading(server):
    server.mode = "huge_announced"
    with _alma(server, max_reply_bytes=MB) as alma, pytest.raises(AlmaBadReplyError, match="419,430,400 bytes"):
        alma.get_set("1")


def test_gzip_bomb_is_counted_decoded(server):
    server.mode = "gzip_bomb"
    with _alma(server, max_reply_bytes=MB) as alma, pytest.raises(AlmaBadReplyError, match="larger than the 1 MB"):
        alma.get_set("1")


def test_huge_reply_to_a_post_is_an_unknown_outcome(server):
    server.mode = "huge"
    with _alma(server, max_reply_bytes=MB) as alma, pytest.raises(AlmaUnreachableError, match="outcome"):
        alma.run_job("M1", [("set_id", "1"), ("job_name", "x")])


def test_slow_drip_is_cut_off_by_the_deadline(server):
    server.mode = "drip"
    # Each read returns within the 2 s timeout, so only the overall deadline can end this.
    with _alma(server, timeout=2.0, deadline=0.5) as alma, pytest.raises(AlmaUnreachableError) as caught:
        alma.get_set("1")
    assert "ReplyTooSlow" in str(caught.value)


def test_deep_json_is_a_one_line_bad_reply(server):
    server.mode = "deep"
    with _alma(server) as alma, pytest.raises(AlmaBadReplyError, match="nested more than 64 levels"):
        alma.get_set("1")


def test_send_bounded_direct(server):
    server.mode = "drip"
    with httpx.Client(timeout=2.0) as client:
        with pytest.raises(ReplyTooSlow):
            send_bounded(client, client.build_request("GET", _url(server)), max_bytes=MB, deadline=0.3)
        server.mode = "huge"
        with pytest.raises(ReplyTooLarge):
            send_bounded(client, client.build_request("GET", _url(server)), max_bytes=MB, deadline=30)
        server.mode = "ok"
        reply = send_bounded(client, client.build_request("GET", _url(server)), max_bytes=MB, deadline=30)
        assert reply.content == SET_JSON and reply.json()["name"] == "ok"


def test_json_depth_ignores_brackets_in_strings():
    assert json_depth('{"a": [1, {"b": "[[[\\"{{"}]}') == 3
    assert load_json(b'\xef\xbb\xbf{"a": "]]]"}') == {"a": "]]]"}
    with pytest.raises(JsonTooDeep):
        load_json(b"[" * 200_000)


PRIMO = PrimoConfig(domain="primo.example.org", view="VIEW")


def _verify(httpd: ThreadingHTTPServer, **kwargs: object):
    with Verifier(_url(httpd), PRIMO, concurrency=1, retries=0, sleep=lambda s: None, **kwargs) as verifier:  # type: ignore[arg-type]
        return list(verifier.verify([VerifyItem("991", "11084/1")]))[0]


def test_huge_handle_reply_is_an_error_verdict_with_memory_low(server):
    server.mode = "huge"
    tracemalloc.start()
    try:
        result = _verify(server)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.verdict is Verdict.ERROR and "larger than the 1 MB limit" in (result.detail or "")
    assert peak < 50 * MB


def test_slow_handle_reply_gives_up(server):
    server.mode = "drip"
    result = _verify(server, timeout=2.0, deadline=0.3)
    assert result.verdict is Verdict.ERROR and "did not arrive within 0.3 s" in (result.detail or "")


def test_deep_handle_reply_is_not_a_traceback(server):
    server.mode = "deep"
    result = _verify(server)
    assert result.verdict is Verdict.ERROR and "internal error" not in (result.detail or "")
