"""sclora_tools/io/hub_datasets.py (and data.py on top of it): which files make a split, and Hub
datasets read through the Hub test double on 127.0.0.1 with the real client: the registry's
samsum, ORG/NAME@revision:split, the local cache offline, and one sentence for each failure."""

from __future__ import annotations

import json

import huggingface_hub.constants as constants
import pytest
from huggingface_hub import CommitOperationAdd, HfApi

from sclora_tools import data
from sclora_tools.errors import InputError, RemoteError
from sclora_tools.io.hub_datasets import glob_regex, split_files
from tests.hubdouble.client import close_hf_session
from tests.hubdouble.dataset_repos import SAMSUM_REPO, parquet_bytes, samsum_rows, serve_samsum

WHERE = "org/set at commit abc"


@pytest.fixture
def offline(monkeypatch):
    """HF_HUB_OFFLINE=1 set after the client was imported, as a user or the CLI runner sets it."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


# ----------------------------------------------------------------------------- which files make a split


@pytest.mark.parametrize("listing,split,expected", [
    (["train.csv", "validation.csv", "test.csv"], "validation", ["validation.csv"]),
    (["samsum-train.json", "samsum-test.json", "samsum-val.json"], "validation", ["samsum-val.json"]),
    (["data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet", "data/heldout-00000-of-00001.parquet"],
     "train", ["data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet"]),
    (["data/heldout-00000-of-00001.parquet", "data/train-00000-of-00001.parquet"], "heldout", ["data/heldout-00000-of-00001.parquet"]),
    (["default/train/0000.parquet", "default/test/0000.parquet", "default/test-notes.csv"], "test", ["default/test/0000.parquet"]),
    (["chats.jsonl", "more/chats2.parquet", "README.md", "loader.py", ".gitattributes"], "train", ["chats.jsonl", "more/chats2.parquet"]),
    (["training_set.jsonl", "interval.jsonl"], "train", ["training_set.jsonl"]),
])
def test_the_file_name_conventions_pick_the_split(listing, split, expected):
    assert split_files(listing, {}, split, WHERE) == expected


def test_the_cards_default_config_wins_over_the_conventions():
    listing = ["a/one.parquet", "a/two.parquet", "b/train.parquet", "b/test.parquet"]
    configs = [{"config_name": "b", "data_files": [{"split": "train", "path": "b/train.*"}]},
               {"config_name": "a", "default": True, "data_files": [{"split": "train", "path": ["a/*.parquet"]},
                                                                    {"split": "test", "path": "a/two.*"}]}]
    assert split_files(listing, {"configs": configs}, "train", WHERE) == ["a/one.parquet", "a/two.parquet"]
    assert split_files(listing, {"configs": configs}, "test", WHERE) == ["a/two.parquet"]
    assert split_files(listing, {"configs": [{"config_name": "x", "data_files": "b/*.parquet"}]}, "train", WHERE) == listing[2:]
    assert split_files(listing, {"configs": [{"data_files": {"test": "b/test.parquet"}}]}, "test", WHERE) == ["b/test.parquet"]


def test_a_glob_star_stays_within_a_folder_and_two_cross_folders():
    assert glob_regex("data/train-*").fullmatch("data/train-0.parquet")
    assert not glob_regex("data/*.parquet").fullmatch("data/sub/x.parquet")
    assert glob_regex("data/**/*.parquet").fullmatch("data/sub/x.parquet")
    assert glob_regex("**/x.parquet").fullmatch("x.parquet")
    assert glob_regex("part-[0-9].csv").fullmatch("part-7.csv") and not glob_regex("part-[!0-9].csv").fullmatch("part-7.csv")


def test_a_missing_split_names_the_splits_there_are():
    with pytest.raises(InputError, match=r"has no split 'validation' \(it has test, train\).*ORG/NAME:SPLIT"):
        split_files(["train.csv", "test.csv"], {}, "validation", WHERE)


def test_a_repo_with_only_a_loading_script_is_refused_not_run():
    with pytest.raises(InputError, match="no parquet, jsonl, json or csv data files.*never runs a loading script"):
        split_files(["set.py", "README.md", "data.zip"], {}, "train", WHERE)


# ----------------------------------------------------------------------------- through the Hub test double


def test_samsum_comes_from_the_hub_in_the_registrys_prompt_response_form(fake_hub):
    commit = serve_samsum(fake_hub)
    loaded = data.load_dataset_rows("samsum", None, 0)
    assert loaded.spec.source == SAMSUM_REPO and loaded.total_rows == len(samsum_rows("train"))
    assert loaded.rows == samsum_rows("train")  # the train split only, every row, in file order
    assert loaded.record == {"commit": commit, "data_files": ["data/train-00000-of-00001.parquet"]}
    row = data.apply_templates(loaded.rows[0], loaded.spec)
    assert row["prompt"].startswith("Summarize the following dialogue") and row["prompt"].endswith(loaded.rows[0]["dialogue"])
    assert row["response"] == loaded.rows[0]["summary"]
    assert not fake_hub.requests_to(r"validation|test-0000")  # the other splits are not downloaded


def test_an_id_at_a_revision_and_split_reads_that_commit(fake_hub):
    first = serve_samsum(fake_hub, "org/chats")
    fake_hub.create_repo("org/chats")  # a model repo of the same name is another repo
    changed = [{**row, "summary": "changed"} for row in samsum_rows("validation")]
    update = CommitOperationAdd("data/validation-00000-of-00001.parquet", parquet_bytes(changed))
    HfApi().create_commit("org/chats", [update], commit_message="new summaries", repo_type="dataset")
    assert data.load_dataset_rows("org/chats:validation", None, 0).rows == changed
    pinned = data.load_dataset_rows(f"org/chats@{first}:validation", None, 0)
    assert pinned.rows == samsum_rows("validation") and pinned.record["commit"] == first


def test_json_lines_and_csv_files_of_a_repo_without_a_card(fake_hub):
    rows = [{"prompt": f"q{i}", "response": f"a{i}"} for i in range(3)]
    jsonl = "\n".join(json.dumps(row) for row in rows).encode()
    csv_text = "prompt,response\n" + "".join(f"\"t{i}, with a comma\",r{i}\n" for i in range(2))
    fake_hub.create_repo("datasets/org/pairs", files={"pairs-train.json": jsonl, "pairs-test.csv": csv_text.encode()})
    assert data.load_dataset_rows("org/pairs", None, 0).rows == rows
    assert data.load_dataset_rows("org/pairs:test", None, 0).rows == [{"prompt": f"t{i}, with a comma", "response": f"r{i}"}
                                                                       for i in range(2)]


def test_offline_reads_the_cache_without_a_request(fake_hub, monkeypatch):
    serve_samsum(fake_hub)
    online = data.load_dataset_rows("samsum", 8, 3)
    before = len(fake_hub.requests)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cached = data.load_dataset_rows("samsum", 8, 3)
    assert len(fake_hub.requests) == before
    assert cached.rows == online.rows and cached.record == online.record
    with pytest.raises(InputError, match="samsum.*not in the local Hub cache.*HF_HUB_OFFLINE.*run once online"):
        data.load_dataset_rows("samsum:validation", 8, 3)  # this split was never downloaded
    assert len(fake_hub.requests) == before


def test_offline_with_nothing_cached_names_the_bundled_stand_in(fake_hub, offline):
    serve_samsum(fake_hub)
    with pytest.raises(InputError) as caught:
        data.load_dataset_rows("samsum", 8, 0)
    message = str(caught.value)
    assert "samsum (knkarthick/samsum) is not in the local Hub cache" in message and "dialogsum" in message
    assert message.count(". ") == 0 and message.endswith(".")  # one sentence
    with pytest.raises(InputError, match="org/other is not in the local Hub cache.*a local .jsonl/.json/.csv/.parquet file"):
        data.load_dataset_rows("org/other", 8, 0)
    assert fake_hub.requests == []


def test_hub_failures_are_one_sentence_each(fake_hub):
    serve_samsum(fake_hub)
    with pytest.raises(InputError, match="org/absent was not found at http://127.0.0.1.*check the id, or set HF_TOKEN"):
        data.load_dataset_rows("org/absent", 8, 0)
    with pytest.raises(InputError, match="has no revision 'v9'.*check the @revision"):
        data.load_dataset_rows(f"{SAMSUM_REPO}@v9", 8, 0)
    with pytest.raises(InputError, match="has no split 'dev'.*it has test, train, validation"):
        data.load_dataset_rows(f"{SAMSUM_REPO}:dev", 8, 0)
    fake_hub.inject(r"^GET /datasets/.*\.parquet$", 503, times=5)
    with pytest.raises(RemoteError, match=r"refused to send dataset samsum .*HTTP 503.*or use the bundled stand-in dialogsum"):
        data.load_dataset_rows("samsum", 8, 0)


def test_hf_endpoint_is_read_when_the_dataset_is_loaded(fake_hub, monkeypatch):
    """The client read HF_ENDPOINT at import; a value set later (as the CLI runner or a notebook sets
    it) still decides where the dataset comes from."""
    serve_samsum(fake_hub)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", "http://127.0.0.1:9/{repo_id}/resolve/{revision}/{filename}")
    assert data.load_dataset_rows("samsum", 4, 0).record["commit"] == fake_hub.head(f"datasets/{SAMSUM_REPO}")
    assert fake_hub.requests_to(r"^/datasets/knkarthick/samsum/resolve/", method="GET")


def test_a_hub_that_is_down_falls_back_to_the_cache(fake_hub):
    serve_samsum(fake_hub)
    online = data.load_dataset_rows("samsum", 8, 1)
    fake_hub.stop()
    close_hf_session()  # no pooled connection to the stopped server: connection refused from now on
    assert data.load_dataset_rows("samsum", 8, 1).rows == online.rows
    with pytest.raises(RemoteError, match="cannot reach the Hub at http://127.0.0.1.* dataset org/never.*not in the local cache"):
        data.load_dataset_rows("org/never", 8, 1)
