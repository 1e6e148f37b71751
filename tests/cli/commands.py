"""Helpers of the CLI tests: argument lists, the check of a clean one-sentence failure, and the
temporary siblings a staged write could leave behind."""

from __future__ import annotations

from pathlib import Path

INIT_ARTEFACTS = (
    "residual/config.json",
    "residual/model.safetensors",
    "adapter/adapter_config.json",
    "adapter/adapter_model.safetensors",
    "exact/corrections.safetensors",
    "manifest.json",
)


def squeeze(text: str) -> str:
    """The text with all whitespace removed: rich wraps long lines (even inside paths)."""
    return "".join(text.split())


def leftovers(path: Path) -> list[str]:
    """Temporary siblings a staged write could leave behind."""
    return sorted(p.name for p in path.parent.glob(f".{path.name}.*"))


def assert_clean_failure(result, output: Path | None, *phrases: str, code: int | None = None) -> str:
    """Exit != 0 (or `code`), one `error:` line on stderr, no traceback, every phrase in the
    message, and no output directory or temporary sibling left behind. Returns the message."""
    assert result.exit_code != 0, result.output
    if code is not None:
        assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # handled, not a crash
    assert "Traceback" not in result.output
    assert "internal error" not in result.output, result.output
    error_lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1, result.output
    assert "error:" in result.stderr and "error:" not in result.stdout
    message = result.stderr[result.stderr.index("error:"):]
    for phrase in phrases:
        assert squeeze(phrase) in squeeze(message), (phrase, message)
    if output is not None:
        assert not output.exists(), f"{output} was left behind"
        assert leftovers(output) == []
    return message


def init_args(calibration: Path, output: Path, *extra: str) -> list[str]:
    return ["init", str(calibration), "-o", str(output), *extra]


def calibrate_args(model: Path, pos: Path, neg: Path, output: Path, *extra: str) -> list[str]:
    return ["calibrate", str(model), "--pos", str(pos), "--neg", str(neg), "-o", str(output),
            "--samples", "8", "--max-length", "16", "--batch-size", "4", *extra]
