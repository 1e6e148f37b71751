"""`sclora calibrate MODEL --pos samsum --neg safety` with HF_ENDPOINT at the Hub test double: the
registry's samsum comes from the Hub and the manifest says which commit; a second run with
HF_HUB_OFFLINE=1 reads the local cache; offline with nothing cached is one sentence naming the
bundled dialogsum."""

from __future__ import annotations

from sclora_tools.cli.app import app
from sclora_tools.errors import InputError
from sclora_tools.io.manifest import load_manifest
from sclora_tools.io.manifest_types import Role
from tests.cli.commands import assert_clean_failure, calibrate_args
from tests.hubdouble.dataset_repos import SAMSUM_REPO, serve_samsum


def test_calibrate_reads_samsum_from_the_hub_then_offline_from_the_cache(runner, fake_hub, tiny_fp32, tmp_path):
    commit = serve_samsum(fake_hub)
    online = runner.invoke(app, calibrate_args(tiny_fp32, "samsum", "safety", tmp_path / "online"))
    assert online.exit_code == 0, online.output
    assert "Fetching" not in online.output and "it/s" not in online.output  # no client progress bars
    pos = load_manifest(tmp_path / "online", "calibration").dataset(Role.POS)
    assert (pos.name, pos.kind, pos.source, pos.split) == ("samsum", "hub", SAMSUM_REPO, "train")
    assert pos.commit == commit and pos.data_files == ("data/train-00000-of-00001.parquet",)
    assert pos.samples == 8 and pos.tokens > 0
    neg = load_manifest(tmp_path / "online", "calibration").dataset(Role.NEG)
    assert (neg.kind, neg.commit, neg.data_files) == ("bundled", None, ())

    before = len(fake_hub.requests)
    offline = runner.invoke(app, calibrate_args(tiny_fp32, "samsum", "safety", tmp_path / "offline"), env={"HF_HUB_OFFLINE": "1"})
    assert offline.exit_code == 0, offline.output
    assert len(fake_hub.requests) == before  # nothing asked of the Hub
    assert load_manifest(tmp_path / "offline", "calibration").dataset(Role.POS) == pos  # same commit, same texts


def test_calibrate_offline_with_nothing_cached_names_the_bundled_stand_in(runner, fake_hub, tiny_fp32, tmp_path):
    serve_samsum(fake_hub)
    out = tmp_path / "calib"
    result = runner.invoke(app, calibrate_args(tiny_fp32, "samsum", "safety", out), env={"HF_HUB_OFFLINE": "1"})
    message = assert_clean_failure(result, out, "samsum (knkarthick/samsum) is not in the local Hub cache", "HF_HUB_OFFLINE",
                                   "the bundled stand-in dialogsum", code=InputError.exit_code)
    assert len([line for line in message.splitlines() if line.strip()]) == 1
    assert fake_hub.requests == []
