"""Secrets: with HF_TOKEN set to a marker, SCLORA_DEBUG=1 and --json, the whole pipeline (calibrate,
init, train with checkpoints, merge, eval, push to the local Hub double, push --to a folder, and a
push that fails with the debug traceback) never writes the marker anywhere: not in a file written
(every artefact, the published folder, the Hub home), not in what the Hub double stored or received
outside the Authorization header, not on stdout or stderr (down to the file descriptors), not in the
card, not in the traceback. The token was used: it went out in the Authorization header."""

from __future__ import annotations

import traceback
from pathlib import Path

import pytest

from sclora_tools.cli.app import app
from tests.documents import result_of

MARKER = "hf_SecretMarker7f3a9cDoNotLeak0123456789"
REPO = "fake-org/secret-test"


@pytest.fixture
def hub(fake_hub_factory):
    return fake_hub_factory(token=MARKER)


def files_holding(root: Path, secret: bytes) -> list[str]:
    return [str(path) for path in sorted(root.rglob("*")) if path.is_file() and secret in path.read_bytes()]


def test_the_token_appears_nowhere(hub, runner, tiny_fp32, data_files, tmp_path, capfd):
    workspace = tmp_path / "workspace"
    environment = {"HF_TOKEN": MARKER, "SCLORA_DEBUG": "1"}
    steps = [
        ["calibrate", tiny_fp32, "--pos", data_files["pos"], "--neg", data_files["neg"], "-o", workspace / "calib", "--samples", "8",
         "--max-length", "24"],
        ["init", workspace / "calib", "-o", workspace / "run", "--beta", "0.9", "--rank", "4"],
        ["train", workspace / "run", "-o", workspace / "trained", "--data", data_files["pos"], "--samples", "8", "--max-steps", "2",
         "--save-steps", "1", "--max-length", "48"],
        ["merge", workspace / "trained", "-o", workspace / "merged"],
        ["eval", workspace / "merged", "--samples", "2", "--max-new-tokens", "4"],
        ["push", workspace / "merged", "--repo-id", REPO],
        ["push", workspace / "merged", "--repo-id", REPO, "--to", workspace / "published"],
    ]
    printed = []
    for step in steps:
        result = runner.invoke(app, [*map(str, step), "--json"], env=environment)
        assert result.exit_code == 0, (step[0], result.output, result.exception)
        result_of(result.stdout, str(step[0]))  # one JSON document, nothing else
        printed += [result.stdout, result.stderr]

    hub.fail_next_commit = True  # a failure under SCLORA_DEBUG=1: the exception and its chain are shown
    failed = runner.invoke(app, ["push", str(workspace / "merged"), "--repo-id", "fake-org/failing", "--json"], env=environment)
    assert failed.exit_code != 0 and failed.exc_info is not None
    printed += [failed.stdout, failed.stderr, "".join(traceback.format_exception(*failed.exc_info))]
    captured = capfd.readouterr()
    printed += [captured.out, captured.err]

    assert f"Bearer {MARKER}" in hub.auth_headers()  # the token was used, in the header only
    assert [i for i, text in enumerate(printed) if MARKER in text] == []
    secret = MARKER.encode()
    assert files_holding(tmp_path, secret) == []
    assert files_holding(Path(hub.hf_home), secret) == []
    assert hub.find_leaks(MARKER) == []
    stored = {path: data for commit in hub.commits(REPO) for path, data in commit.contents().items()}
    assert "README.md" in stored and all(secret not in data for data in stored.values())
    assert (workspace / "published" / "README.md").is_file() and (workspace / "trained" / "checkpoints").is_dir()
