"""The dashboard's tests share one world of sets per module (``tests.support.web.build_world``) and an in-process
client of the app on it; a module that needs another world (a fresh one per test) defines its own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from orchestrator.web import create_app
from tests.support.web import World, build_world

LOCAL = "http://127.0.0.1:8155"


@pytest.fixture(scope="module")
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = build_world(tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1]))
    yield w
    w.close()


@pytest.fixture(scope="module")
def client(world: World) -> Iterator[TestClient]:
    with TestClient(create_app(world.reader), base_url=LOCAL) as c:
        yield c
