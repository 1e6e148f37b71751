"""The bad-input matrix as a whole: its rows are split by concern over two files, and together they
must hold at least 25 rows and every case the reliability issue asks for, each name once."""

from __future__ import annotations

from tests.reliability import test_bad_input_environment, test_bad_input_files

TABLES = (test_bad_input_files.CASES, test_bad_input_environment.CASES)

REQUIRED = (
    "unknown dataset", "empty file", "wrong fields", "non-UTF-8 data file", "rows longer than max length (cut and counted)",
    "unknown targets", "missing targets", "rank > min(d_out, d_in)", "rank <= 0", "beta outside [0, 1]",
    "calibration of another model", "calibration of another revision",
    "truncated weights", "bit-flipped weights (residual)", "truncated covariances", "bit-flipped covariances",
    "truncated adapter", "bit-flipped adapter", "truncated corrections", "bit-flipped corrections",
    ".bin-only checkpoint", "output folder exists and is not ours", "needs trust_remote_code",
    "NaN in weights", "Inf in covariances", "NaN in a trained adapter", "disk full while writing",
    "Hub 401", "Hub 404", "Hub 429", "Hub 500", "Hub timeout", "offline with a Hub id", "Ctrl-C (SIGINT)", "SIGTERM",
)


def test_the_matrix_has_every_required_row():
    names = [name for table in TABLES for name in table]
    assert len(names) >= 25
    assert len(set(names)) == len(names), "a row name is used in both files"
    missing = [name for name in REQUIRED if name not in names]
    assert missing == [], f"the matrix lacks {missing}"
