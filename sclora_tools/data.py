"""Datasets: registry short names, Hub dataset ids and local files; the three row formats; the
rendering of a row into the exact text the model sees."""

from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path

from . import ui
from .errors import InputError
from .io.hashing import sha256_texts
from .io.hub_datasets import download_split
from .io.manifest_types import DatasetRecord, Role

LOCAL_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


@dataclass(frozen=True)
class DatasetSpec:
    """A resolved dataset argument. `kind` is registry, hub or file; for registry entries the
    templates turn the source's fields into prompt/response."""

    name: str
    kind: str
    source: str
    split: str = "train"
    revision: str | None = None
    prompt_template: str | None = None
    response_template: str | None = None
    description: str = ""
    offline: str | None = None  # the bundled registry entry that stands in for it without the Hub

    def describe(self) -> dict:
        return {"name": self.name, "kind": self.kind, "source": self.source, "split": self.split, "revision": self.revision}


@dataclass(frozen=True)
class Example:
    """One rendered sample: the full text, and the prompt prefix whose tokens carry no loss
    (None for text rows, which train on every token)."""

    text: str
    prompt: str | None = None
    add_special_tokens: bool = True


@dataclass
class LoadedDataset:
    """The chosen rows of a dataset; `record`: what the manifest adds about their origin (a Hub
    dataset's resolved commit and data files)."""

    spec: DatasetSpec
    rows: list[dict]
    total_rows: int
    record: dict = field(default_factory=dict)


def registry() -> dict[str, dict]:
    table = json.loads(resources.files("sclora_tools").joinpath("registry.json").read_text(encoding="utf-8"))
    return {name: entry for name, entry in table.items() if not name.startswith("_")}


def resolve_dataset(argument: str) -> DatasetSpec:
    """Registry short name (a Hub one with an optional `:split`), local file, or Hub dataset id
    `ORG/NAME[@revision][:split]`."""
    table = registry()
    if argument in table:
        return spec_from_registry(argument, table[argument])
    name, _, split = argument.partition(":")
    if split and table.get(name, {}).get("source") == "hub":  # another split of a registry Hub dataset: samsum:test
        return replace(spec_from_registry(name, table[name]), name=argument, split=split)
    path = Path(argument).expanduser()
    if path.suffix.lower() in LOCAL_SUFFIXES:
        if not path.is_file():
            raise InputError(f"dataset file {path} does not exist; check the path.")
        return DatasetSpec(name=path.name, kind="file", source=str(path.resolve()))
    if path.exists():
        raise InputError(f"dataset {argument} is not a .jsonl, .json, .csv or .parquet file; convert it to one of those.")
    return spec_from_hub_argument(argument, table)


def spec_from_registry(name: str, entry: dict) -> DatasetSpec:
    source = entry["id"] if entry["source"] == "hub" else entry["file"]
    return DatasetSpec(
        name=name,
        kind="hub" if entry["source"] == "hub" else "bundled",
        source=source,
        split=entry.get("split", "train"),
        revision=entry.get("revision"),
        prompt_template=entry.get("prompt"),
        response_template=entry.get("response"),
        description=entry.get("description", ""),
        offline=entry.get("offline"),
    )


def spec_from_hub_argument(argument: str, table: dict) -> DatasetSpec:
    main, _, split = argument.partition(":")
    repo_id, _, revision = main.partition("@")
    if repo_id.count("/") != 1:
        names = ", ".join(sorted(table))
        raise InputError(
            f"dataset {argument!r} is not a registry name ({names}), a local .jsonl/.json/.csv/.parquet file "
            "or a Hub id ORG/NAME; check the spelling."
        )
    return DatasetSpec(name=argument, kind="hub", source=repo_id, split=split or "train", revision=revision or None)


def read_rows(spec: DatasetSpec) -> tuple[list[dict], dict]:
    """The rows of the whole split, and what the manifest records about their origin beyond the spec."""
    if spec.kind == "file":
        return read_local_file(Path(spec.source)), {}
    if spec.kind == "bundled":
        with resources.as_file(resources.files("sclora_tools.datasets").joinpath(spec.source)) as path:
            return read_local_file(path), {}
    return read_hub_dataset(spec)


def read_local_file(path: Path) -> list[dict]:
    suffix = path.suffix.lower()
    try:
        if suffix == ".jsonl":
            with open(path, encoding="utf-8") as handle:
                return [json.loads(line) for line in handle if line.strip()]
        if suffix == ".json":
            return read_json(path.read_text(encoding="utf-8"))
        if suffix == ".csv":
            with open(path, encoding="utf-8", newline="") as handle:
                return list(csv.DictReader(handle))
        return read_parquet(path)
    except UnicodeDecodeError as exc:
        raise InputError(f"{path} is not UTF-8 text (it holds the byte 0x{exc.object[exc.start:exc.start + 1].hex()}, which UTF-8 "
                         "cannot decode there); re-save it as UTF-8.") from exc
    except (json.JSONDecodeError, csv.Error) as exc:
        raise InputError(f"cannot read {path} as {suffix[1:]} ({exc}); fix the file or convert it.") from exc


def read_parquet(path: Path) -> list[dict]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError(f"reading {path.name} needs pyarrow, which is not installed: `pip install pyarrow`, or convert "
                         "the data to .jsonl.") from None
    return pq.read_table(path).to_pylist()


def read_json(text: str) -> list[dict]:
    """A .json file: a list of rows, {"data"|"rows": [...]}, or (as many Hub datasets ship) JSON Lines."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg != "Extra data":
            raise
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    return data if isinstance(data, list) else data.get("data") or data.get("rows") or []


def read_hub_dataset(spec: DatasetSpec) -> tuple[list[dict], dict]:
    """The split's data files from the Hub (or its local cache), read like local files."""
    label = spec.source if spec.name == spec.source else f"{spec.name} ({spec.source})"
    instead = (f"the bundled stand-in {spec.offline} (same fields, no Hub needed)" if spec.offline
               else "a local .jsonl/.json/.csv/.parquet file")
    found = download_split(spec.source, spec.revision, spec.split, instead, label)
    rows = [row for path in found.paths() for row in read_local_file(path)]
    return rows, {"commit": found.commit, "data_files": list(found.files)}


def sample_rows(rows: list[dict], count: int, seed: int, label: str) -> list[dict]:
    """`count` rows chosen deterministically from `seed`; all rows (with a warning) if fewer."""
    if count <= 0:
        raise InputError(f"--samples must be positive, got {count}.")
    if len(rows) <= count:
        if len(rows) < count:
            ui.warn(f"{label} has only {len(rows)} rows; using all of them instead of {count}.")
        return list(rows)
    picked = random.Random(seed).sample(range(len(rows)), count)
    return [rows[i] for i in picked]


def load_dataset_rows(argument: str, count: int | None, seed: int) -> LoadedDataset:
    """The dataset's rows: `count` sampled with `seed`, or all of them when count is None."""
    spec = resolve_dataset(argument)
    rows, origin = read_rows(spec)
    if not rows:
        raise InputError(f"dataset {argument} has no rows; check the file or split.")
    chosen = rows if count is None else sample_rows(rows, count, seed, argument)
    return LoadedDataset(spec=spec, rows=chosen, total_rows=len(rows), record=origin)


def apply_templates(row: dict, spec: DatasetSpec) -> dict:
    if spec.prompt_template is None:
        return row
    try:
        return {"prompt": spec.prompt_template.format(**row), "response": spec.response_template.format(**row)}
    except KeyError as exc:
        raise InputError(f"dataset {spec.name} rows lack the field {exc}; the registry entry does not fit this data.") from exc


def render(row: dict, tokenizer, spec: DatasetSpec, position: int = 0) -> Example:
    """Turn one row into the exact text the model sees (chat template when the model has one)."""
    row = apply_templates(row, spec)
    if "messages" in row:
        return render_messages(list(row["messages"]), tokenizer, spec, position)
    if "prompt" in row and "response" in row:
        messages = [{"role": "user", "content": str(row["prompt"])}, {"role": "assistant", "content": str(row["response"])}]
        if has_chat_template(tokenizer):
            return render_messages(messages, tokenizer, spec, position)
        prompt = f"{row['prompt']}\n"
        return Example(text=f"{prompt}{row['response']}{tokenizer.eos_token or ''}", prompt=prompt)
    if "text" in row:
        return Example(text=str(row["text"]), prompt=None, add_special_tokens=True)
    raise InputError(
        f"row {position} of {spec.name} has none of the fields text, prompt+response or messages; reshape the data into one of those formats."
    )


def render_all(loaded: LoadedDataset, tokenizer) -> list[Example]:
    """Every row of a loaded dataset, rendered."""
    return [render(row, tokenizer, loaded.spec, position) for position, row in enumerate(loaded.rows)]


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def render_messages(messages: list[dict], tokenizer, spec: DatasetSpec, position: int) -> Example:
    if not has_chat_template(tokenizer):
        text = "".join(f"{m['role']}: {m['content']}\n" for m in messages)
        return Example(text=text, prompt=None)
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    if messages and messages[-1].get("role") == "assistant":
        prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
        if full.startswith(prompt):
            return Example(text=full, prompt=prompt, add_special_tokens=False)
    return Example(text=full, prompt=None, add_special_tokens=False)


def texts_record(loaded: LoadedDataset, examples: list[Example], tokens: int, role: Role, truncated: int | None = None) -> dict:
    """What the manifest records about one dataset as it was used (`truncated`: samples cut at --max-length)."""
    return DatasetRecord(
        role=role,
        **loaded.spec.describe(),
        **loaded.record,
        rows_available=loaded.total_rows,
        samples=len(examples),
        tokens=tokens,
        texts_sha256=sha256_texts(example.text for example in examples),
        truncated=truncated,
    ).to_dict()


def warn_truncated(truncated: int, samples: int, name: str, max_length: int) -> None:
    """Long samples are not an error: they are cut, counted in the manifest, and said once."""
    if truncated:
        ui.warn(f"{truncated} of {samples} samples of {name} are longer than --max-length {max_length} tokens and were cut to it "
                "(the manifest counts them as `truncated`).")
