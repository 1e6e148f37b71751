"""The harness of the bad-input matrix (its rows live in test_bad_input_files.py and
test_bad_input_environment.py; test_bad_input_matrix.py checks the table as a whole).

A row is a function `Rows -> Call`: it builds its bad input from the shared fixtures and says what
`sclora` must answer. `check_row` runs it and asserts the exit code (the specific one: errors.py),
one `error:` sentence on stderr naming the problem and the fix, no traceback (and, with
SCLORA_DEBUG=1, the ScloraError behind it), and no artefact or staging folder at the output.
Ctrl-C and SIGTERM are sent to a real process in the middle of its run.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sclora_tools.cli.app import app
from sclora_tools.errors import ScloraError
from tests.chain import fresh_copy, tree_digest
from tests.cli.commands import assert_clean_failure, leftovers
from tests.conftest import PUBLISHED
from tests.documents import failure_of
from tests.publishing import REPO
from tests.reliability.processes import wait_until_started

Row = Callable[["Rows"], "Call"]


@dataclass
class Call:
    """What a row runs and what it expects."""

    argv: list
    code: int
    phrases: tuple[str, ...] = ()
    output: Path | None = None  # nothing may appear there
    env: dict = field(default_factory=dict)
    unchanged: Path | None = None  # an existing folder that must come out byte for byte the same
    send: int | None = None  # run as a real process and send this signal once it holds its output's lock
    check: Callable[[object], None] | None = None  # more assertions, after the run (and its SCLORA_DEBUG=1 re-run)


class Rows:
    """The fixtures a row builds its input from, made on first use."""

    def __init__(self, request, tmp_path: Path, monkeypatch) -> None:
        self.request, self.tmp, self.monkeypatch = request, tmp_path, monkeypatch

    def fixture(self, name: str):
        return self.request.getfixturevalue(name)

    @property
    def chain(self):
        return self.fixture("tiny_chain")(**PUBLISHED)

    @property
    def model(self) -> Path:
        return self.fixture("tiny_fp32")

    @property
    def data(self) -> dict[str, Path]:
        return self.fixture("data_files")

    def out(self, name: str = "out") -> Path:
        return self.tmp / name

    def copy(self, artefact: Path, name: str) -> Path:
        return fresh_copy(artefact, self.tmp, name)

    def calibrate(self, model: Path | str, pos: Path | str | None = None, neg: Path | str | None = None, *extra: str) -> list:
        return ["calibrate", model, "--pos", pos or self.data["pos"], "--neg", neg or self.data["neg"], "-o", self.out(),
                "--samples", "8", "--max-length", "24", "--batch-size", "8", *extra]

    def init(self, calibration: Path | None = None, *extra: str) -> list:
        return ["init", calibration or self.chain.calib, "-o", self.out(), "--beta", "0.9", "--rank", "4", *extra]

    def train(self, run: Path) -> list:
        return ["train", run, "-o", self.out(), "--data", self.data["pos"], "--samples", "4", "--max-steps", "1", "--max-length", "32"]

    def merge(self, run: Path) -> list:
        return ["merge", run, "-o", self.out()]

    def push(self) -> list:
        self.fixture("fake_hub")
        return ["push", self.fixture("merged_run"), "--repo-id", REPO]

    def text_file(self, name: str, content: bytes) -> Path:
        path = self.tmp / name
        path.write_bytes(content)
        return path


def as_args(argv: list) -> list[str]:
    return [str(part) for part in argv]


def check_row(row: Row, request, runner, tmp_path: Path, monkeypatch) -> None:
    """Run one row of the matrix and assert everything its Call expects."""
    call = row(Rows(request, tmp_path, monkeypatch))
    before = tree_digest(call.unchanged) if call.unchanged is not None else None
    if call.send is not None:
        run_with_a_signal(request.getfixturevalue("forkserver"), call)
        return
    result = runner.invoke(app, as_args(call.argv), env=call.env)
    if call.code == 0:
        assert result.exit_code == 0, result.output
        call.check(result)
        return
    message = assert_clean_failure(result, call.output, *call.phrases, code=call.code)
    if "--json" in call.argv:
        assert " ".join(failure_of(result.stdout, call.argv[0], call.code)["message"].split()) in " ".join(message.split())
    if call.unchanged is not None:
        assert tree_digest(call.unchanged) == before and leftovers(call.unchanged) == []
    assert_debug_shows_the_error(runner, call)
    if call.check is not None:
        call.check(result)


def run_with_a_signal(forkserver, call: Call) -> None:
    child = forkserver.start(as_args(call.argv), env=call.env)
    assert wait_until_started(child, call.output), f"the run ended before the signal: {child.stderr}"
    child.signal(call.send)
    assert child.wait() == call.code, child.stderr
    lines = [line for line in child.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and all(" ".join(p.split()) in lines[0] for p in call.phrases), child.stderr
    assert "Traceback" not in child.stderr
    failure_of(child.stdout, call.argv[0], call.code, "interrupted" if call.send == signal.SIGINT else "terminated")  # --json
    assert not call.output.exists() and leftovers(call.output) == []  # the staging was removed on the way out


def assert_debug_shows_the_error(runner, call: Call) -> None:
    """With SCLORA_DEBUG=1 the same run raises the ScloraError itself (a traceback for the bug report)."""
    result = runner.invoke(app, as_args(call.argv), env={**call.env, "SCLORA_DEBUG": "1"})
    assert isinstance(result.exception, ScloraError) and result.exception.exit_code == call.code, repr(result.exception)
    assert result.exc_info is not None and result.exc_info[2] is not None
    if call.output is not None:
        assert not call.output.exists() and leftovers(call.output) == []
