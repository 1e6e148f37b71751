"""Hide local filesystem paths in what gets published.

A manifest records where the model, the data and every run lived on the machine that made them
(/home/alice/project/data.jsonl, /builds/ci-runner-7/...). That is useful locally and a leak in a
public repository, so `push` replaces every absolute or home-relative path in the card, the
provenance manifest and the eval report by `<local>/` + its last component. Hub ids (org/name),
URLs and relative paths are left alone; the sha256 records still identify the exact files.
"""

from __future__ import annotations

import re
from typing import Any

PLACEHOLDER = "<local>"
# a path starts at a string start, whitespace, a quote, '(' or '=' (not after a word character,
# ':' or '/', which would make it part of a Hub id or a URL) and runs to whitespace or a delimiter
LOCAL_PATH = re.compile(r"(?<![\w:/.~<>\\-])~?/[^\s'\"`|,;()\[\]{}<>]+")
QUOTED_PATH = re.compile(r"(['\"])(~?/[^'\"\n]+)\1")  # shell-quoted, may hold spaces
WHOLE_PATH = re.compile(r"~?/[^\n]+")  # a value that is a path as a whole, spaces included


def hide_in_text(text: str) -> str:
    if WHOLE_PATH.fullmatch(text):
        return shortened(text)
    text = QUOTED_PATH.sub(lambda match: match.group(1) + shortened(match.group(2)) + match.group(1), text)
    return LOCAL_PATH.sub(lambda match: shortened(match.group(0)), text)


def shortened(path: str) -> str:
    parts = [part for part in path.split("/") if part and part != "~"]
    return f"{PLACEHOLDER}/{parts[-1]}" if parts else PLACEHOLDER


def hide_in(document: Any) -> Any:
    """A copy of a JSON-like document with every string value passed through hide_in_text."""
    if isinstance(document, str):
        return hide_in_text(document)
    if isinstance(document, dict):
        return {key: hide_in(value) for key, value in document.items()}
    if isinstance(document, list):
        return [hide_in(value) for value in document]
    return document
