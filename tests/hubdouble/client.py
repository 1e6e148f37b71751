"""Point the real `huggingface_hub` client (and transformers/peft) at a local FakeHubServer, and keep
every other host unreachable.

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

import huggingface_hub.constants as constants
import pytest
from huggingface_hub import hf_api
from huggingface_hub.utils import _detect_agent, _http, close_session
from transformers.utils import hub as transformers_hub

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
    hf_home = Path(hf_home)
    for folder in (hf_home, hf_home / "hub", hf_home / "assets"):
        folder.mkdir(parents=True, exist_ok=True)
    patch_environment(monkeypatch, endpoint, token, hf_home)
    patch_constants(monkeypatch, endpoint, hf_home)
    patch_derived_values(monkeypatch, endpoint, hf_home)


def patch_environment(monkeypatch: pytest.MonkeyPatch, endpoint: str, token: str, hf_home: Path) -> None:
    """For code that reads os.environ at call time and for subprocesses (e.g. the `sclora` CLI)."""
    for name in _ENV_TO_UNSET:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setenv("HF_TOKEN", token)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_UPDATE_CHECK", "1")
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("HF_TOKEN_PATH", str(hf_home / "token"))
    monkeypatch.setenv("HF_XET_CACHE", str(hf_home / "xet"))
    no_proxy = ",".join(v for v in ("127.0.0.1", "localhost", os.environ.get("NO_PROXY", "")) if v)
    monkeypatch.setenv("NO_PROXY", no_proxy)
    monkeypatch.setenv("no_proxy", no_proxy)


def patch_constants(monkeypatch: pytest.MonkeyPatch, endpoint: str, hf_home: Path) -> None:
    """Constants captured at import time in huggingface_hub.constants (read as `constants.X` at call time)."""
    host = endpoint.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0].lower()
    values = {
        "_staging_mode": False, "ENDPOINT": endpoint, "HF_URL_HOSTS": frozenset(constants.HF_URL_HOSTS | {host}),
        "HUGGINGFACE_CO_URL_TEMPLATE": endpoint + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_HUB_OFFLINE": False, "HF_HUB_DISABLE_XET": True, "HF_HUB_DISABLE_TELEMETRY": True, "HF_HUB_DISABLE_IMPLICIT_TOKEN": False,
        "HF_HOME": str(hf_home), "HF_HUB_CACHE": str(hf_home / "hub"), "HUGGINGFACE_HUB_CACHE": str(hf_home / "hub"),
        "HF_ASSETS_CACHE": str(hf_home / "assets"), "HUGGINGFACE_ASSETS_CACHE": str(hf_home / "assets"),
        "HF_XET_CACHE": str(hf_home / "xet"), "HF_TOKEN_PATH": str(hf_home / "token"),
        "HF_STORED_TOKENS_PATH": str(hf_home / "stored_tokens"),
    }
    for name, value in values.items():
        monkeypatch.setattr(constants, name, value)
    for name in ("AGENT_HARNESSES_PATH", "CHECK_FOR_UPDATE_DONE_PATH", "CHECK_FOR_SKILL_UPDATE_DONE_PATH"):
        if hasattr(constants, name):
            monkeypatch.setattr(constants, name, str(hf_home / Path(getattr(constants, name)).name))
    if hasattr(constants, "HF_HUB_DISABLE_UPDATE_CHECK"):
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_UPDATE_CHECK", True)


def patch_derived_values(monkeypatch: pytest.MonkeyPatch, endpoint: str, hf_home: Path) -> None:
    """Values derived from the endpoint at import time elsewhere."""
    # the module-level HfApi behind `huggingface_hub.create_repo`, `model_info`, `upload_folder`, ...
    monkeypatch.setattr(hf_api.api, "endpoint", endpoint)
    monkeypatch.setattr(hf_api.api, "_whoami_cache", {})
    # origins to which redirects are followed with the auth header kept (HEAD /resolve)
    if hasattr(_http, "_HUB_ORIGINS"):
        monkeypatch.setattr(_http, "_HUB_ORIGINS", frozenset(_http._HUB_ORIGINS | {_http._url_origin(endpoint)}))
    # the "AI agent harness" registry is fetched ONCE per process from {ENDPOINT}/api/agent-harnesses when the
    # first user-agent is built: pin it to empty so no request is ever sent for it (nor cached to ~/.cache)
    if hasattr(_detect_agent, "_registry"):
        monkeypatch.setattr(_detect_agent, "_registry", {"standardEnvVars": [], "harnesses": {}})
    # transformers keeps a copy of HF_HOME-based paths; only the modules cache matters (remote code)
    if hasattr(transformers_hub, "HF_MODULES_CACHE"):
        monkeypatch.setattr(transformers_hub, "HF_MODULES_CACHE", str(hf_home / "modules"))


def is_loopback(host: object) -> bool:
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
        if host is not None and not is_loopback(host):
            blocked.append(str(host))
            raise socket.gaierror(socket.EAI_NONAME, f"fake_hub fixture: network access to {host!r} is blocked")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)


def close_hf_session() -> None:
    """Drop huggingface_hub's shared httpx client (pooled keep-alive connections to a previous fake server)."""
    close_session()
