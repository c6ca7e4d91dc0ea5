"""Hostile XML: billion laughs, external entities (file and network), a 50 MB reply, deep nesting and
other encodings are refused with a clear error, never expanded, never fetched, without eating memory:
through ``xmlsafe.parse_xml``, through ``AlmaClient`` replies, and through ``hwf check``."""

from __future__ import annotations

import json
import resource
import socket
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from orchestrator.alma.client import AlmaClient
from orchestrator.cli import base as cli
from orchestrator.errors import AlmaBadReplyError, AlmaError, UnsafeXmlError
from orchestrator.simulator import Scenario, SimServer, Simulator
from orchestrator.xmlsafe import MAX_XML_BYTES, MalformedXmlError, parse_xml
from tests.support import write_config

KEY = "l7xx-xml-safety"
LOL = (
    '<?xml version="1.0"?>\n<!DOCTYPE lolz [\n <!ENTITY lol "lol">\n'
    + "".join(f' <!ENTITY lol{n} "{("&lol" + (str(n - 1) if n > 1 else "") + ";") * 10}">\n' for n in range(1, 10))
    + "]>\n"
)
BILLION_LAUGHS = (LOL + "<set><name>&lol9;</name></set>").encode()


def external(url: str, root: str = "set") -> bytes:
    return (
        f'<?xml version="1.0"?><!DOCTYPE {root} [<!ENTITY x SYSTEM "{url}">]><{root}><name>&x;</name></{root}>'.encode()
    )


def huge_reply() -> bytes:
    return b"<set><name>" + b"x" * (50 * 1024 * 1024) + b"</name></set>"


def measured(call: Callable[[], Any]) -> tuple[BaseException, int, int]:
    """Run ``call`` expecting an exception; return it with the peak Python allocation and RSS growth (bytes)."""
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    tracemalloc.start()
    try:
        call()
    except Exception as exc:
        error: BaseException = exc
    else:
        raise AssertionError("the document was accepted")
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    rss_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before
    return error, peak, rss_growth


SMALL = 8 * 1024 * 1024


@pytest.fixture
def listener() -> Iterator[tuple[str, socket.socket]]:
    """A TCP port on 127.0.0.1 that records whether anyone connected (an entity must never be fetched)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(5)
    sock.setblocking(False)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/x", sock
    sock.close()


def nobody_connected(sock: socket.socket) -> bool:
    try:
        conn, _ = sock.accept()
    except BlockingIOError:
        return True
    conn.close()
    return False


# ---------------------------------------------------------------------------------------------
# the parser itself


def test_billion_laughs_is_refused_without_expanding() -> None:
    error, peak, rss = measured(lambda: parse_xml(BILLION_LAUGHS, "Alma reply"))
    assert type(error) is UnsafeXmlError
    assert "Alma reply has a DOCTYPE or entity declaration" in str(error) and "never expanded" in str(error)
    assert peak < SMALL and rss < 8 * SMALL


@pytest.mark.parametrize("url", ["file:///etc/passwd", "http://127.0.0.1:9/x"])
def test_external_entities_are_refused(url: str) -> None:
    with pytest.raises(UnsafeXmlError, match="DOCTYPE or entity declaration") as info:
        parse_xml(external(url))
    assert "root:" not in str(info.value)


def test_network_entity_is_never_fetched(listener: tuple[str, socket.socket]) -> None:
    url, sock = listener
    for document in (external(url), external(url).decode().encode("utf-16")):
        with pytest.raises(UnsafeXmlError):
            parse_xml(document)
    assert nobody_connected(sock)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32"])
def test_doctype_in_another_encoding_is_refused(encoding: str) -> None:
    for document in (BILLION_LAUGHS, external("file:///etc/passwd")):
        text = document.decode().replace('<?xml version="1.0"?>', f'<?xml version="1.0" encoding="{encoding}"?>')
        with pytest.raises(UnsafeXmlError, match="DOCTYPE|amplification") as info:
            parse_xml(text.encode(encoding))
        assert not isinstance(info.value, MalformedXmlError)


def test_fifty_megabytes_are_refused_before_parsing() -> None:
    body = huge_reply()
    error, peak, rss = measured(lambda: parse_xml(body, "Alma reply"))
    assert type(error) is UnsafeXmlError
    assert f"over the {MAX_XML_BYTES:,}-byte limit" in str(error) and "52,428,824 bytes" in str(error)
    assert peak < SMALL and rss < SMALL


def test_deep_nesting_hits_the_parser_limit() -> None:
    depth = 100_000
    error, peak, _ = measured(lambda: parse_xml(b"<a>" * depth + b"</a>" * depth))
    assert type(error) is UnsafeXmlError and "safety limits" in str(error)
    assert peak < SMALL


def test_broken_xml_is_malformed_not_unsafe() -> None:
    with pytest.raises(MalformedXmlError, match="not well-formed"):
        parse_xml(b"<set><name>unclosed</set>")
    with pytest.raises(MalformedXmlError, match="empty|not well-formed"):
        parse_xml(b"")
    assert issubclass(MalformedXmlError, UnsafeXmlError)  # callers catching UnsafeXmlError still catch it


# ---------------------------------------------------------------------------------------------
# Alma replies through the client


def client_answering(body: bytes, status: int = 200, content_type: str = "application/xml") -> AlmaClient:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=body, headers={"Content-Type": content_type})

    return AlmaClient("http://alma.test", KEY, transport=httpx.MockTransport(handler), max_retries=0)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(BILLION_LAUGHS, id="billion-laughs"),
        pytest.param(external("file:///etc/passwd"), id="file-entity"),
        pytest.param(external("http://127.0.0.1:9/x"), id="http-entity"),
    ],
)
def test_client_refuses_hostile_replies(body: bytes) -> None:
    with client_answering(body) as client:
        error, peak, rss = measured(lambda: client.get_set("9563654780000561"))
    assert isinstance(error, UnsafeXmlError) and "DOCTYPE" in str(error)
    assert peak < SMALL and rss < 8 * SMALL


def test_client_refuses_a_utf16_billion_laughs() -> None:
    with client_answering(BILLION_LAUGHS.decode().encode("utf-16")) as client:
        error, peak, _ = measured(lambda: client.get_set("9563654780000561"))
    # Alma speaks UTF-8: a body that does not start like XML or JSON is refused before any parsing.
    assert isinstance(error, AlmaBadReplyError | UnsafeXmlError) and "lollol" not in str(error)
    assert peak < SMALL


def test_client_refuses_a_fifty_megabyte_reply() -> None:
    body = huge_reply()
    with client_answering(body) as client:
        error, _, rss = measured(lambda: client.get_set("9563654780000561"))
    # Refused by the reply cap (alma.max_reply_mb) before a byte of it is read, so xmlsafe never sees it.
    assert isinstance(error, AlmaBadReplyError) and "larger than the 20 MB limit" in str(error)
    assert rss < 8 * SMALL  # the body itself was allocated before; nothing near it again


def test_client_still_calls_broken_xml_a_bad_reply() -> None:
    with client_answering(b"<set><id>1</id><name>unclosed") as client, pytest.raises(AlmaBadReplyError) as info:
        client.get_set("1")
    assert "not well-formed" in str(info.value) and "GET /conf/sets/1" in str(info.value)


def test_hostile_error_body_is_not_parsed() -> None:
    with client_answering(BILLION_LAUGHS, status=400) as client, pytest.raises(AlmaError) as info:
        client.get_set("1")
    assert not isinstance(info.value, UnsafeXmlError)
    assert "400" in str(info.value) and "lollol" not in str(info.value)


# ---------------------------------------------------------------------------------------------
# hwf check: a hostile record becomes BAD_XML, never expanded


def hostile_record(clean: bytes, doctype: str) -> bytes:
    body = clean.replace(b"</record>", b"<dc:description>&x;</dc:description></record>", 1)
    return f"<!DOCTYPE record [{doctype}]>".encode() + body


def test_hwf_check_marks_hostile_records_bad_xml(tmp_path: Path, listener: tuple[str, socket.socket]) -> None:
    url_entity, sock = listener
    sim = Simulator(Scenario(per_second_limit=0))
    ids = sim.generate_records(6, profile="clean", seed=3)
    set_id = sim.create_set("Hostile", ids)
    records = sim.records
    laughs = LOL.split("[", 1)[1].rsplit("]", 1)[0] + '<!ENTITY x "&lol9;">'
    records[ids[0]].xml = hostile_record(records[ids[0]].xml, laughs)
    records[ids[1]].xml = hostile_record(records[ids[1]].xml, '<!ENTITY x SYSTEM "file:///etc/passwd">')
    records[ids[2]].xml = hostile_record(records[ids[2]].xml, f'<!ENTITY x SYSTEM "{url_entity}">')
    with SimServer(sim, host="127.0.0.1", port=0) as server:
        write_config(tmp_path, server.url, preset="minimal", resolver=server.url, requests_per_second=1000)
        runner = CliRunner()
        env = {"HWF_ALMA_API_KEY": KEY}
        for fmt in ("json", "xml"):
            if fmt == "xml":
                text = (
                    (tmp_path / "hwf.toml")
                    .read_text()
                    .replace("requests_per_second", 'format = "xml"\nrequests_per_second')
                )
                (tmp_path / "hwf.toml").write_text(text)
            else:
                assert runner.invoke(cli.app, ["add", set_id], env=env).exit_code == 0
            result = runner.invoke(cli.app, ["check", set_id, "--json"], env=env)
            assert result.exit_code == 3, result.output  # BAD_XML records: the set cannot go on as it is
            summary = json.loads(result.stdout)
            bad = {p["mms_id"]: p for p in summary["problems"] if p["class"] == "BAD_XML"}
            assert set(bad) == set(ids[:3]), (fmt, summary)
            assert all("DOCTYPE" in (p["detail"] or "") for p in bad.values())
            assert summary["counts"]["READY"] == 3
    assert nobody_connected(sock)
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("hwf.db*"))
    assert b"lollol" not in stored and b"root:x:0" not in stored
