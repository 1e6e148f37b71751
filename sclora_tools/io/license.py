"""The license a base model declares: the front matter of its model card, else its config.json.
Only a declared license is ever published; none is invented."""

from __future__ import annotations

import json
from pathlib import Path

LICENSE_KEYS = ("license", "license_name", "license_link")


def declared_license(cards: list[Path], config: Path) -> dict:
    """license / license_name / license_link from the first card (README.md) that declares a
    license, else {"license": ...} from `config`, else {}."""
    for card in cards:
        found = card_license(card)
        if "license" in found:
            return found
    return config_license(config)


def card_license(card: Path) -> dict:
    from huggingface_hub import ModelCard
    from huggingface_hub.repocard import REGEX_YAML_BLOCK

    try:
        text = card.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return {}
    if not REGEX_YAML_BLOCK.search(text):
        return {}
    try:
        data = ModelCard(text, ignore_metadata_errors=True).data.to_dict()
    except Exception:  # noqa: BLE001 - a malformed base card declares no usable license
        return {}
    return {key: data[key] for key in LICENSE_KEYS if isinstance(data.get(key), str) and data[key].strip()}


def config_license(config: Path) -> dict:
    try:
        document = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    value = document.get("license") if isinstance(document, dict) else None
    return {"license": value} if isinstance(value, str) and value.strip() else {}
