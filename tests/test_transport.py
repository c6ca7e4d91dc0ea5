"""The verifier's HTTP/1.1 transport (orchestrator/transport.py) against real servers on 127.0.0.1: keep-alive per
thread, a connection the server closed, bodies of every framing, the bounded reader's cap and deadline on top,
errors as httpx's, TLS, redirects across origins, and a proxy from the environment."""

from __future__ import annotations

import contextlib
import gzip
import http.server
import json
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from orchestrator.alma.client import AlmaClient
from orchestrator.bounded import ReplyTooLarge, ReplyTooSlow, send_bounded
from orchestrator.config import PrimoConfig
from orchestrator.domain.handles import Verdict
from orchestrator.errors import AlmaError, ConfigError
from orchestrator.resolver import Verifier, VerifyItem
from orchestrator.transport import KeepAliveTransport, environment_proxy

BODY = b'{"responseCode":1}'


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.connections = 0
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.lock = threading.Lock()
        self.other = ""  # another server's URL, for /redirect

    def handle_error(self, request: object, client_address: object) -> None:
        return  # a client that gave up (the timeout and deadline tests) is expected, not a failure to print

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Server

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server.lock:
            self.server.connections += 1

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        return

    def _reply(self, status: int, body: bytes, **headers: str) -> None:
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", "Content-Length": str(len(body)), **headers}.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self) -> None:  # noqa: N802 - stdlib name
        self.do_GET()

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        length = int(self.headers.get("Content-Length", "0"))
        data = self.rfile.read(length)
        self._record()
        self._reply(200, json.dumps({"got": data.decode()}).encode())

    def _record(self) -> None:
        with self.server.lock:
            self.server.requests.append((self.command, self.path, dict(self.headers.items())))

    def do_GET(self) -> None:  # noqa: N802 - stdlib name, one branch per behaviour under test
        self._record()
        path = self.path.split("?")[0]
        if path == "/close":
            self._reply(200, BODY, Connection="close")
            self.close_connection = True
        elif path == "/hangup":  # keep-alive promised, then the server closes anyway (an idle timeout)
            self._reply(200, BODY)
            self.close_connection = True
        elif path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (b'{"responseCode":', b"1}"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
        elif path == "/gzip":
            self._reply(200, gzip.compress(b"x" * 5000), Content_Encoding="gzip")
        elif path == "/big":
            self._reply(200, b"x" * 200_000)
        elif path == "/drip":
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            for _ in range(100):
                self.wfile.write(b"x")
                time.sleep(0.05)
        elif path == "/truncated":
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.write(b"x" * 10)
            self.close_connection = True
        elif path == "/garbage":
            self.wfile.write(b"HELLO THERE\r\n\r\n")
            self.close_connection = True
        elif path == "/silent":
            time.sleep(1.0)
            self._reply(200, BODY)
        elif path == "/empty":
            self.send_response(204)
            self.end_headers()
        elif path == "/latin1":
            self._reply(200, BODY, X_Name="caf\u00e9")
        elif path == "/redirect":
            self._reply(302, b"", Location=f"{self.server.other}/ok")
        else:
            self._reply(200, BODY)


@contextlib.contextmanager
def serving(server: Server) -> Iterator[Server]:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    with serving(Server()) as srv:
        yield srv


@pytest.fixture
def other() -> Iterator[Server]:
    with serving(Server()) as srv:
        yield srv


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(transport=KeepAliveTransport(), timeout=5.0) as c:
        yield c


def test_one_connection_per_thread_kept_alive(server: Server, client: httpx.Client) -> None:
    for _ in range(10):
        assert client.get(f"{server.url}/ok").content == BODY
    assert server.connections == 1

    def ten() -> None:
        for _ in range(10):
            assert client.get(f"{server.url}/ok").status_code == 200

    threads = [threading.Thread(target=ten) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert server.connections == 1 + 4  # each thread its own, kept for all of its requests
    assert len(server.requests) == 50


def test_the_request_goes_out_as_httpx_built_it(server: Server, client: httpx.Client) -> None:
    client.get(f"{server.url}/ok?type=URL&auth=true", headers={"Accept": "application/json", "X-Extra": "1"})
    method, path, headers = server.requests[-1]
    assert (method, path) == ("GET", "/ok?type=URL&auth=true")
    lowered = {k.lower(): v for k, v in headers.items()}
    assert lowered["host"] == server.url.removeprefix("http://")
    assert lowered["accept"] == "application/json"
    assert lowered["x-extra"] == "1"
    assert "identity" not in lowered.get("accept-encoding", "")  # http.client's own default is not added


def test_post_with_a_body(server: Server, client: httpx.Client) -> None:
    reply = client.post(f"{server.url}/echo", content=b"hello")
    assert reply.json() == {"got": "hello"}
    streamed = client.post(f"{server.url}/echo", content=iter([b"str", b"eam"]))  # httpx: Transfer-Encoding chunked
    assert streamed.json() == {"got": "stream"}
    assert server.requests[-1][2].get("Content-Length") == "6"


def test_connection_close_is_honoured(server: Server, client: httpx.Client) -> None:
    for _ in range(3):
        assert client.get(f"{server.url}/close").content == BODY
    assert server.connections == 3


def test_a_connection_the_server_dropped_is_replaced_for_a_get(server: Server, client: httpx.Client) -> None:
    assert client.get(f"{server.url}/hangup").status_code == 200
    # The reply promised keep-alive; the server closed the connection anyway. The next GET is sent on the dead
    # connection, fails, and goes out once more on a new one without the caller seeing anything.
    assert client.get(f"{server.url}/ok").content == BODY
    assert server.connections == 2
    assert [p for _, p, _ in server.requests] == ["/hangup", "/ok"]


def test_a_post_never_goes_out_on_a_connection_the_server_closed(server: Server, client: httpx.Client) -> None:
    assert client.get(f"{server.url}/hangup").status_code == 200
    time.sleep(0.2)  # the server's FIN arrives
    assert client.post(f"{server.url}/echo", content=b"once").json() == {"got": "once"}
    assert [p for _, p, _ in server.requests] == ["/hangup", "/echo"]  # sent once, on a new connection
    assert server.connections == 2


def test_chunked_gzip_empty_and_head(server: Server, client: httpx.Client) -> None:
    assert client.get(f"{server.url}/chunked").json() == {"responseCode": 1}
    assert client.get(f"{server.url}/gzip", headers={"Accept-Encoding": "gzip"}).content == b"x" * 5000
    empty = client.get(f"{server.url}/empty")
    assert (empty.status_code, empty.content) == (204, b"")
    head = client.head(f"{server.url}/ok")
    assert (head.status_code, head.content, head.headers["content-length"]) == (200, b"", str(len(BODY)))
    assert client.get(f"{server.url}/ok").content == BODY
    assert server.connections == 1  # every framing left the connection reusable


def test_header_bytes_round_trip(server: Server, client: httpx.Client) -> None:
    reply = client.get(f"{server.url}/latin1")
    assert (b"x-name", b"caf\xe9") in [(k.lower(), v) for k, v in reply.headers.raw]  # the bytes as sent
    assert reply.http_version == "HTTP/1.1"
    assert reply.reason_phrase == "OK"


def test_the_size_cap_stops_reading_and_the_connection_is_not_reused(server: Server, client: httpx.Client) -> None:
    with pytest.raises(ReplyTooLarge):
        send_bounded(client, client.build_request("GET", f"{server.url}/big"), max_bytes=1000, deadline=5)
    # The rest of that body is still on the wire: the connection was closed, not handed to the next request.
    assert client.get(f"{server.url}/ok").content == BODY
    assert server.connections == 2


def test_the_cap_counts_decoded_bytes(server: Server, client: httpx.Client) -> None:
    request = client.build_request("GET", f"{server.url}/gzip", headers={"Accept-Encoding": "gzip"})
    with pytest.raises(ReplyTooLarge):
        send_bounded(client, request, max_bytes=1000, deadline=5)


def test_the_deadline_ends_a_dripping_reply(server: Server, client: httpx.Client) -> None:
    started = time.monotonic()
    with pytest.raises(ReplyTooSlow):
        send_bounded(client, client.build_request("GET", f"{server.url}/drip"), max_bytes=10_000, deadline=0.5)
    assert time.monotonic() - started < 2.5  # not the 5 s the whole body takes


def test_errors_are_httpx_errors(server: Server, client: httpx.Client) -> None:
    with pytest.raises(httpx.RemoteProtocolError):
        client.get(f"{server.url}/truncated")
    with pytest.raises(httpx.RemoteProtocolError):
        client.get(f"{server.url}/garbage")
    with pytest.raises(httpx.ReadTimeout):
        client.get(f"{server.url}/silent", timeout=0.2)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here
    with pytest.raises(httpx.ConnectError):
        client.get(f"http://127.0.0.1:{port}/ok")
    with pytest.raises(httpx.UnsupportedProtocol):
        KeepAliveTransport().handle_request(httpx.Request("GET", "ftp://127.0.0.1/x"))
    assert client.get(f"{server.url}/ok").content == BODY  # and the next request is fine


def test_redirect_to_another_origin(server: Server, other: Server, client: httpx.Client) -> None:
    server.other = other.url
    reply = client.get(f"{server.url}/redirect", follow_redirects=True)
    assert reply.content == BODY
    assert [p for _, p, _ in other.requests] == ["/ok"]
    assert (server.connections, other.connections) == (1, 1)


def test_close_closes_every_thread_connection(server: Server) -> None:
    transport = KeepAliveTransport()
    client = httpx.Client(transport=transport)
    done = threading.Event()

    def one() -> None:
        client.get(f"{server.url}/ok")
        done.set()

    thread = threading.Thread(target=one)
    thread.start()
    thread.join()
    client.get(f"{server.url}/ok")
    assert len(transport._open) == 2
    client.close()
    assert len(transport._open) == 0
    with pytest.raises(httpx.ConnectError):
        transport.handle_request(httpx.Request("GET", f"{server.url}/ok"))


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[Server, Path]]:
    if shutil.which("openssl") is None:
        if os.environ.get("CI"):
            pytest.fail("the openssl command is missing (.ci/run installs it)")
        pytest.skip("needs the openssl command (.ci/run installs it)")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert)]
        + ["-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )
    srv = Server()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    srv.socket = context.wrap_socket(srv.socket, server_side=True)
    with serving(srv):
        yield srv, cert


def test_https_with_a_trusted_and_an_untrusted_certificate(tls_server: tuple[Server, Path]) -> None:
    srv, cert = tls_server
    url = f"https://127.0.0.1:{srv.server_address[1]}/ok"
    trusted = ssl.create_default_context(cafile=str(cert))
    with httpx.Client(transport=KeepAliveTransport(ssl_context=trusted)) as client:
        assert client.get(url).content == BODY
        assert client.get(url).content == BODY
        assert srv.connections == 1
        assert client.get(url.replace("/ok", "/hangup")).content == BODY
        time.sleep(0.1)
        assert client.get(url).content == BODY  # the TLS connection the server closed is replaced, unseen
    assert srv.connections == 2
    with httpx.Client(transport=KeepAliveTransport()) as client, pytest.raises(httpx.ConnectError) as failure:
        client.get(url)  # a self-signed certificate is not in the default roots
    assert "CERTIFICATE_VERIFY_FAILED" in str(failure.value)


PRIMO = PrimoConfig(domain="primo.example.edu", view="01X_INST:X")


def test_the_verifier_talks_to_the_resolver_directly(server: Server) -> None:
    with Verifier(server.url, PRIMO, concurrency=4, requests_per_second=None, retries=0) as verifier:
        results = list(verifier.verify([VerifyItem(str(990 + i), f"11084/{i}") for i in range(8)]))
        assert verifier._keepalive is not None and not verifier._keepalive._open  # closed with their threads
    # The test server answers every path with responseCode 1 and no values: registered, no URL value.
    assert {r.verdict for r in results} == {Verdict.NO_URL}
    assert server.connections <= 4
    assert sorted(p for _, p, _ in server.requests) == sorted(  # the public answer is wrong: the primary's too
        f"/api/handles/11084/{i}?type=URL{auth}" for i in range(8) for auth in ("", "&auth=true")
    )


@pytest.fixture
def no_proxies(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.delenv("REQUEST_METHOD", raising=False)
    return monkeypatch


def test_environment_proxy(no_proxies: pytest.MonkeyPatch) -> None:
    assert environment_proxy("https://api-eu.hosted.exlibrisgroup.com") is None
    no_proxies.setenv("HTTPS_PROXY", "proxy.example.edu:3128")
    assert environment_proxy("https://api-eu.hosted.exlibrisgroup.com") == "http://proxy.example.edu:3128"
    assert environment_proxy("http://hdl.handle.net") is None  # only https is proxied
    no_proxies.setenv("https_proxy", "http://lower.example.edu:8080")  # lower case wins, as in curl
    assert environment_proxy("https://hdl.handle.net") == "http://lower.example.edu:8080"
    no_proxies.setenv("NO_PROXY", ".handle.net, intranet.example.edu")
    assert environment_proxy("https://hdl.handle.net") is None
    assert environment_proxy("https://api-eu.hosted.exlibrisgroup.com") == "http://lower.example.edu:8080"
    no_proxies.setenv("ALL_PROXY", "http://all.example.edu:1")
    assert environment_proxy("http://hdl.example.org") == "http://all.example.edu:1"
    for loopback in ("http://127.0.0.1:8000", "http://localhost:1", "http://[::1]:2"):
        assert environment_proxy(loopback) is None  # a proxy cannot reach this machine's loopback


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("http://user:secret@[::1", "Invalid port"),
        ("socks9://user:secret@proxy:1", "http and https proxies only"),
        ("proxy.example.edu:notaport", "Invalid port"),
    ],
)
def test_an_unusable_proxy_is_one_line_naming_the_variable(
    no_proxies: pytest.MonkeyPatch, value: str, problem: str
) -> None:
    no_proxies.setenv("HTTPS_PROXY", value)
    with pytest.raises(ConfigError) as failure:
        environment_proxy("https://hdl.handle.net")
    message = str(failure.value)
    assert "$HTTPS_PROXY" in message and problem in message and "\n" not in message
    assert "secret" not in message  # the password is never shown


def test_a_proxy_from_the_environment_carries_verifier_and_alma_requests(
    other: Server, no_proxies: pytest.MonkeyPatch
) -> None:
    no_proxies.setenv("HTTP_PROXY", other.url)
    with Verifier("http://resolver.invalid", PRIMO, concurrency=1, requests_per_second=None, retries=0) as verifier:
        [result] = verifier.verify([VerifyItem("991", "11084/1")])
    assert result.verdict is Verdict.NO_URL  # the proxy answered
    assert other.requests[-1][:2] == ("GET", "http://resolver.invalid/api/handles/11084/1?type=URL&auth=true")
    with AlmaClient("http://alma.invalid", "secret-key", max_retries=0) as alma:
        with pytest.raises(AlmaError):
            alma.get_set("123")  # the proxy's reply is no set: what matters is where the request went
    method, path, headers = other.requests[-1]
    assert (method, path) == ("GET", "http://alma.invalid/almaws/v1/conf/sets/123")
    assert headers["Authorization"] == "apikey secret-key"
