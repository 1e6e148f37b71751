"""pytest plugin of the Hub test double (registered in tests/conftest.py): `fake_hub` yields a started
FakeHubServer with the real client pointed at it; `fake_hub_factory` makes more of them."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from .client import FAKE_HF_TOKEN, block_non_loopback_network, close_hf_session, patch_hf_client
from .server import FakeHubServer


@pytest.fixture
def fake_hub_factory(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory):
    """Returns `make(**FakeHubServer kwargs) -> FakeHubServer`: starts a server and points the client at it.

    The client is patched for the LAST server made. Servers are stopped and patches undone after the test.
    For the duration of the test, resolving any non-loopback host name fails (recorded in `server.blocked_hosts`,
    and reported as a test error at teardown, like requests the double does not know and its own bugs).
    """
    servers: list[FakeHubServer] = []
    blocked: list[str] = []
    block_non_loopback_network(monkeypatch, blocked)

    def make(**kwargs) -> FakeHubServer:
        kwargs.setdefault("token", FAKE_HF_TOKEN)
        server = FakeHubServer(**kwargs).start()
        servers.append(server)
        hf_home = tmp_path_factory.mktemp("hf_home")
        patch_hf_client(monkeypatch, server.url, server.token or FAKE_HF_TOKEN, hf_home)
        server.hf_home = hf_home  # type: ignore[attr-defined]
        server.blocked_hosts = blocked  # type: ignore[attr-defined]
        close_hf_session()
        return server

    try:
        yield make
    finally:
        close_hf_session()
        for server in servers:
            server.stop()
        report_problems(servers, blocked)


def report_problems(servers: list[FakeHubServer], blocked: list[str]) -> None:
    errors = [e for s in servers for e in s.internal_errors]
    errors += [f"request the double does not serve: {route}" for s in servers for route in s.unhandled]
    if blocked:
        errors.append(f"attempted network access to non-loopback hosts: {sorted(set(blocked))}")
    if errors:
        pytest.fail("fake_hub: " + "\n".join(errors), pytrace=False)


@pytest.fixture
def fake_hub(fake_hub_factory: Callable[..., FakeHubServer]) -> Iterator[FakeHubServer]:
    """A started FakeHubServer with the huggingface_hub client pointed at it (HF_ENDPOINT, HF_TOKEN, no Xet,
    not offline, caches in a tmp HF_HOME). `fake_hub.url`, `fake_hub.token`, `fake_hub.hf_home`."""
    yield fake_hub_factory()
