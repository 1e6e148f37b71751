"""The fake_hub fixture points the REAL client (and transformers, and subprocesses) at the double and
nowhere else; the token travels as a header only, and the leak detector would see it anywhere else."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import huggingface_hub
import pytest
import torch
from huggingface_hub import (
    CommitOperationAdd,
    HfApi,
    constants,
    hf_hub_download,
    hf_hub_url,
)
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from tests.hubdouble import FAKE_HF_TOKEN
from tests.hubdouble.payloads import REPO, three_files, upload


def test_fixture_points_client_at_fake_hub(fake_hub):
    assert fake_hub.url.startswith("http://127.0.0.1:")
    assert os.environ["HF_ENDPOINT"] == fake_hub.url
    assert constants.ENDPOINT == fake_hub.url
    assert constants.HF_HUB_DISABLE_XET is True and constants.HF_HUB_OFFLINE is False
    assert HfApi().endpoint == fake_hub.url
    assert huggingface_hub.hf_api.api.endpoint == fake_hub.url  # module-level functions
    assert hf_hub_url(REPO, "config.json").startswith(fake_hub.url + "/")
    assert huggingface_hub.get_token() == FAKE_HF_TOKEN == fake_hub.token


def test_non_loopback_network_is_blocked(fake_hub):
    # A client that would bypass the patches (explicit public endpoint) cannot reach the outside world.
    with pytest.raises(Exception):  # noqa: B017 - whichever error the client raises for an unreachable host
        HfApi(endpoint="https://huggingface.co").model_info("gpt2")
    assert fake_hub.blocked_hosts == ["huggingface.co"]
    fake_hub.blocked_hosts.clear()  # expected here; otherwise the fixture fails the test at teardown


def test_token_sent_as_header_but_never_in_uploaded_bytes(fake_hub, big_weights, tmp_path):
    api = HfApi()
    api.create_repo(REPO)
    upload(api, REPO, three_files(big_weights))
    hf_hub_download(REPO, "config.json", cache_dir=tmp_path)

    bearer = f"Bearer {FAKE_HF_TOKEN}"
    headers = fake_hub.auth_headers()
    assert bearer in headers
    # every Hub API / git call carried the token; the LFS PUT (a pre-signed URL on the real Hub) did not
    for record in fake_hub.requests:
        if record.path.startswith("/__fakehub__/"):
            assert record.authorization is None
        else:
            assert record.authorization == bearer, record.path
    assert FAKE_HF_TOKEN.encode() not in fake_hub.all_uploaded_bytes()
    assert fake_hub.find_leaks(FAKE_HF_TOKEN) == []


def test_leak_detector_sees_tokens_inside_committed_files(fake_hub):
    # Sanity check of the check above: a token written into an uploaded (base64-encoded) file is caught.
    api = HfApi()
    api.create_repo(REPO)
    upload(api, REPO, {"oops.json": json.dumps({"token": FAKE_HF_TOKEN}).encode()})
    assert FAKE_HF_TOKEN.encode() in fake_hub.all_uploaded_bytes()
    assert fake_hub.find_leaks(FAKE_HF_TOKEN) == ["content of a committed file"]


def test_subprocess_sees_the_fake_hub_through_env_vars(fake_hub):
    # What a CLI test (`sclora push` run as a subprocess) relies on: the env vars alone are enough there.
    fake_hub.create_repo(REPO, files={"config.json": b"{}"})
    code = (
        "from huggingface_hub import HfApi, constants;"
        f"print(constants.ENDPOINT, constants.HF_HUB_DISABLE_XET, sorted(HfApi().list_repo_files({REPO!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == [fake_hub.url, "True", "['.gitattributes',", "'config.json']"]
    assert f"Bearer {FAKE_HF_TOKEN}" in fake_hub.auth_headers()


def test_transformers_from_pretrained_roundtrip(fake_hub, tmp_path):
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=128,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    model = LlamaForCausalLM(config).eval()
    local_dir = tmp_path / "saved"
    model.save_pretrained(local_dir)

    api = HfApi()
    repo_id = "fake-org/tiny-llama"
    api.create_repo(repo_id)
    ops = [
        CommitOperationAdd(path_in_repo=p.name, path_or_fileobj=str(p))
        for p in sorted(local_dir.iterdir())
        if p.is_file()
    ]
    api.create_commit(repo_id, ops, commit_message="Add tiny llama")
    assert len(fake_hub.commits(repo_id)) == 2
    assert fake_hub.file_entries(repo_id)["model.safetensors"].lfs  # binary => LFS even though small

    loaded = AutoModelForCausalLM.from_pretrained(repo_id, cache_dir=tmp_path / "fresh-cache")
    expected, got = model.state_dict(), loaded.state_dict()
    assert expected.keys() == got.keys()
    for name, tensor in expected.items():
        assert torch.equal(tensor, got[name].to(tensor.dtype)), name
    assert fake_hub.unhandled == []
    # transformers only used /resolve (HEAD + GET) and maybe the API; never another host
    assert all(r.host.startswith("127.0.0.1:") for r in fake_hub.requests)
