"""sclora_tools/errors.py is the one place for exit codes: every error class has a kind and a code of
its own, the README's table lists each of them, and the --json schema knows every kind."""

from __future__ import annotations

import re
from pathlib import Path

from sclora_tools import errors
from sclora_tools.machine_output import schema

README = Path(__file__).resolve().parents[1] / "README.md"


def error_classes() -> list[type[errors.ScloraError]]:
    return [value for value in vars(errors).values() if isinstance(value, type) and issubclass(value, errors.ScloraError)]


def test_every_error_class_has_its_own_kind_and_code():
    classes = error_classes()
    assert {cls.kind: cls.exit_code for cls in classes} == {kind: code for kind, code in errors.EXIT_CODES.items()
                                                            if kind not in ("internal", "interrupted", "terminated")}
    assert len(set(errors.EXIT_CODES.values())) == len(errors.EXIT_CODES)  # one code, one kind
    assert 0 not in errors.EXIT_CODES.values()


def test_the_readme_table_lists_every_kind_with_its_code():
    rows = dict(re.findall(r"^\| (\d+) \| `(\w+)` \|", README.read_text(encoding="utf-8"), flags=re.M))
    assert {kind: int(code) for code, kind in rows.items()} == errors.EXIT_CODES


def test_the_schema_knows_every_kind():
    kinds = schema()["$defs"]["failure"]["properties"]["error"]["properties"]["kind"]["enum"]
    assert sorted(kinds) == sorted(errors.EXIT_CODES)
