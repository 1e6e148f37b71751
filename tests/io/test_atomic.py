"""io/atomic.staged_output: a directory appears complete or not at all, and in a shared cache the
copy another process finished first is kept."""

from __future__ import annotations

import pytest

from sclora_tools.io.atomic import staged_output


def names(directory) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


def test_the_target_is_replaced_only_when_the_block_succeeds(tmp_path):
    final = tmp_path / "out"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), staged_output(final) as staging:
        (staging / "new.txt").write_text("half")
        raise RuntimeError("failed while writing")
    assert names(final) == ["old.txt"] and names(tmp_path) == ["out"]
    with staged_output(final) as staging:
        (staging / "new.txt").write_text("new")
    assert names(final) == ["new.txt"] and names(tmp_path) == ["out"]


def test_a_copy_another_process_finished_meanwhile_is_kept(tmp_path):
    final = tmp_path / "cache" / "model"

    def finished(path):
        return (path / "done").is_file()

    with staged_output(final, finished) as staging:
        (staging / "done").write_text("mine")
        final.mkdir()
        (final / "done").write_text("theirs")  # the other process won the race
    assert (final / "done").read_text() == "theirs" and names(final.parent) == ["model"]
    (final / "done").unlink()
    (final / "partial").write_text("left by a crash")
    with staged_output(final, finished) as staging:
        (staging / "done").write_text("mine")
    assert names(final) == ["done"] and (final / "done").read_text() == "mine" and names(final.parent) == ["model"]
