"""pytest fixtures pointing the real `huggingface_hub` client (and transformers/peft) at a local FakeHubServer.

Use from a conftest.py (the tests/ folder is on sys.path when pytest imports tests/conftest.py):

    from hub_fixtures import fake_hub, fake_hub_factory  # noqa: F401

or directly in a test module. `fake_hub` yields a started `FakeHubServer` (see tests/hub_server.py); `.url` is the
endpoint, `.token` the fake token the client sends.

Why so many patches: `huggingface_hub` reads HF_ENDPOINT, HF_HUB_OFFLINE, HF_HUB_DISABLE_XET, HF_HOME... ONCE, at
import time, into `huggingface_hub.constants`, and derives more module-level values from them
(`HUGGINGFACE_CO_URL_TEMPLATE` used by hf_hub_download, `HF_URL_HOSTS`, `utils._http._HUB_ORIGINS`, and the
module-level `HfApi()` instance behind `huggingface_hub.create_repo`/`upload_folder`/... which captured
`constants.ENDPOINT` in `api.endpoint`). Setting environment variables alone is enough only for subprocesses.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path
from typing import Callable, Iterator

import pytest

try:  # tests/ on sys.path (pytest "prepend" import mode, no tests/__init__.py)
    from hub_server import FakeHubServer
except ImportError:  # tests/ imported as a package
    from tests.hub_server import FakeHubServer  # type: ignore[no-redef]

FAKE_HF_TOKEN = "hf_FakeHubTestToken0123456789abcdefABCDEF"

_ENV_TO_UNSET = (
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "HUGGING_FACE_HUB_TOKEN",
    "HF_OIDC_RESOURCE",
    "HUGGINGFACE_CO_STAGING",
    "HF_HUB_ENABLE_HF_TRANSFER",
    "HF_HUB_DISABLE_IMPLICIT_TOKEN",
    "HF_HUB_CACHE",
    "HUGGINGFACE_HUB_CACHE",
    "HF_ASSETS_CACHE",
    "HUGGINGFACE_ASSETS_CACHE",
    "TRANSFORMERS_CACHE",
    "XDG_CACHE_HOME",
)


def patch_hf_client(monkeypatch: pytest.MonkeyPatch, endpoint: str, token: str, hf_home: Path) -> None:
    """Point huggingface_hub (already imported or not) at `endpoint`, with `token`, caches under `hf_home`.

    Everything goes through `monkeypatch`, so it is all undone at the end of the test.
    """
    import huggingface_hub.constants as constants
    from huggingface_hub import hf_api
    from huggingface_hub.utils import _detect_agent, _http

    hf_home = Path(hf_home)
    hub_cache = hf_home / "hub"
    assets_cache = hf_home / "assets"
    xet_cache = hf_home / "xet"
    token_path = hf_home / "token"
    for folder in (hf_home, hub_cache, assets_cache):
        folder.mkdir(parents=True, exist_ok=True)

    # 1. Environment: for code that reads os.environ at call time and for subprocesses (e.g. the `sclora` CLI).
    for name in _ENV_TO_UNSET:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setenv("HF_TOKEN", token)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_UPDATE_CHECK", "1")
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("HF_TOKEN_PATH", str(token_path))
    monkeypatch.setenv("HF_XET_CACHE", str(xet_cache))
    no_proxy = ",".join(v for v in ("127.0.0.1", "localhost", os.environ.get("NO_PROXY", "")) if v)
    monkeypatch.setenv("NO_PROXY", no_proxy)
    monkeypatch.setenv("no_proxy", no_proxy)

    # 2. Constants captured at import time in huggingface_hub.constants (read as `constants.X` at call time).
    host = endpoint.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0].lower()
    monkeypatch.setattr(constants, "_staging_mode", False)
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_URL_HOSTS", frozenset(constants.HF_URL_HOSTS | {host}))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_IMPLICIT_TOKEN", False)
    monkeypatch.setattr(constants, "HF_HOME", str(hf_home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setattr(constants, "HUGGINGFACE_HUB_CACHE", str(hub_cache))
    monkeypatch.setattr(constants, "HF_ASSETS_CACHE", str(assets_cache))
    monkeypatch.setattr(constants, "HUGGINGFACE_ASSETS_CACHE", str(assets_cache))
    monkeypatch.setattr(constants, "HF_XET_CACHE", str(xet_cache))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(token_path))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(hf_home / "stored_tokens"))
    for name in ("AGENT_HARNESSES_PATH", "CHECK_FOR_UPDATE_DONE_PATH", "CHECK_FOR_SKILL_UPDATE_DONE_PATH"):
        if hasattr(constants, name):
            monkeypatch.setattr(constants, name, str(hf_home / Path(getattr(constants, name)).name))
    if hasattr(constants, "HF_HUB_DISABLE_UPDATE_CHECK"):
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_UPDATE_CHECK", True)

    # 3. Values derived from the endpoint at import time elsewhere.
    #    - the module-level HfApi behind `huggingface_hub.create_repo`, `model_info`, `upload_folder`, ...
    monkeypatch.setattr(hf_api.api, "endpoint", endpoint)
    monkeypatch.setattr(hf_api.api, "_whoami_cache", {})
    #    - origins to which redirects are followed with the auth header kept (HEAD /resolve).
    if hasattr(_http, "_HUB_ORIGINS"):
        monkeypatch.setattr(_http, "_HUB_ORIGINS", frozenset(_http._HUB_ORIGINS | {_http._url_origin(endpoint)}))
    #    - the "AI agent harness" registry is fetched ONCE per process from {ENDPOINT}/api/agent-harnesses when the
    #      first user-agent is built: pin it to empty so no request is ever sent for it (nor cached to ~/.cache).
    if hasattr(_detect_agent, "_registry"):
        monkeypatch.setattr(_detect_agent, "_registry", {"standardEnvVars": [], "harnesses": {}})

    # 4. transformers keeps a copy of HF_HOME-based paths; only the modules cache matters (remote code).
    try:
        import transformers.utils.hub as tf_hub  # noqa: PLC0415

        if hasattr(tf_hub, "HF_MODULES_CACHE"):
            monkeypatch.setattr(tf_hub, "HF_MODULES_CACHE", str(hf_home / "modules"))
    except Exception:  # transformers not importable: nothing to patch
        pass


def _is_loopback(host: object) -> bool:
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if not isinstance(host, str):
        return False
    if host.lower() in ("localhost", "localhost.", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def block_non_loopback_network(monkeypatch: pytest.MonkeyPatch, blocked: list[str]) -> None:
    """Make any name resolution / connection to a non-loopback host fail (and record it in `blocked`).

    Guards against a forgotten patch sending a request to the real Hub (or anywhere else).
    """
    real_getaddrinfo = socket.getaddrinfo

    def guarded_getaddrinfo(host, *args, **kwargs):
        if host is not None and not _is_loopback(host):
            blocked.append(str(host))
            raise socket.gaierror(socket.EAI_NONAME, f"fake_hub fixture: network access to {host!r} is blocked")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)


def _close_hf_session() -> None:
    """Drop huggingface_hub's shared httpx client (pooled keep-alive connections to a previous fake server)."""
    from huggingface_hub.utils import close_session

    close_session()


@pytest.fixture
def fake_hub_factory(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory):
    """Returns `make(**FakeHubServer kwargs) -> FakeHubServer`: starts a server and points the client at it.

    Use it for non-default options (`lfs_cdn_redirect=True`, `multipart_chunk_size=...`, `tree_page_size=...`).
    The client is patched for the LAST server made. Servers are stopped and patches undone after the test.
    For the duration of the test, resolving any non-loopback host name fails (recorded in `server.blocked_hosts`,
    and reported as a test error at teardown).
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
        _close_hf_session()
        return server

    try:
        yield make
    finally:
        _close_hf_session()
        for server in servers:
            server.stop()
        errors = [e for s in servers for e in s.internal_errors]
        if blocked:
            errors.append(f"attempted network access to non-loopback hosts: {sorted(set(blocked))}")
        if errors:
            pytest.fail("fake_hub: " + "\n".join(errors), pytrace=False)


@pytest.fixture
def fake_hub(fake_hub_factory: Callable[..., FakeHubServer]) -> Iterator[FakeHubServer]:
    """A started FakeHubServer with the huggingface_hub client pointed at it (HF_ENDPOINT, HF_TOKEN, no Xet,
    not offline, caches in a tmp HF_HOME). `fake_hub.url`, `fake_hub.token`, `fake_hub.hf_home`."""
    yield fake_hub_factory()
