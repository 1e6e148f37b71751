"""Hub datasets without the `datasets` library: the data files of one split of ORG/NAME at a
revision, downloaded by huggingface_hub into its own cache (so a later run, online or with
HF_HUB_OFFLINE=1, reads them from there), chosen the way the Hub's viewer chooses them (the card's
`configs`, else the file-name conventions). Only parquet, jsonl, json and csv files are taken: a
loading script is never run and a pickle never loaded. Reading the rows is data.py's job."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..errors import InputError, RemoteError
from .hub import hub_endpoint, hub_offline, is_network_error, quiet_hub, timeouts

DATA_SUFFIXES = (".parquet", ".jsonl", ".json", ".csv")
CARD = "README.md"
NOT_DATA = {CARD, "config.json", "dataset_info.json", "dataset_infos.json", "dataset_dict.json"}
SPLIT_KEYWORDS = {
    "train": ("train", "training"),
    "validation": ("validation", "valid", "dev", "val"),
    "test": ("test", "testing", "eval", "evaluation"),
}
SEP = "[-._ 0-9]"  # what may stand between a split keyword and the rest of a name
SHARDED = re.compile(r"^data/(?P<split>\w+)-\d{5}-of-\d{5}[^/]*\.[^/]+$")
DIR_TEMPLATES = (r"(?:.*/)?{k}/.*", rf"(?:.*/)?{{k}}{SEP}[^/]*/.*", rf"(?:.*/)?[^/]*{SEP}{{k}}/.*",
                 rf"(?:.*/)?[^/]*{SEP}{{k}}{SEP}[^/]*/.*")
NAME_TEMPLATES = (rf"(?:.*/)?{{k}}{SEP}[^/]*", rf"(?:.*/)?[^/]*{SEP}{{k}}{SEP}[^/]*")


@dataclass(frozen=True)
class HubSplit:
    """The data files of one split at one commit, in the local Hub cache: `files` are repo paths
    under `folder`."""

    repo_id: str
    commit: str
    folder: Path
    files: tuple[str, ...]

    def paths(self) -> list[Path]:
        return [self.folder / name for name in self.files]


def download_split(repo_id: str, revision: str | None, split: str, instead: str, label: str | None = None) -> HubSplit:
    """The split's files at `revision` (default branch when None), from the cache when they are
    there (always with HF_HUB_OFFLINE set), else from HF_ENDPOINT. The error sentences call the
    dataset `label` and offer `instead` when the Hub cannot help."""
    from huggingface_hub import snapshot_download

    offline = hub_offline()
    common = {"repo_type": "dataset", "local_files_only": offline, "endpoint": hub_endpoint()}
    with quiet_hub(progress=False), timeouts(), hub_dataset_errors(label or repo_id, revision, offline, instead):
        folder = Path(snapshot_download(repo_id, revision=revision, allow_patterns=[CARD], **common))
        listing = repo_listing(repo_id, folder, offline)
        files = split_files(listing, read_card(folder / CARD), split, f"{label or repo_id} at commit {folder.name[:12]}")
        snapshot_download(repo_id, revision=folder.name, allow_patterns=files, **common)
    return HubSplit(repo_id=repo_id, commit=folder.name, folder=folder, files=tuple(files))


def repo_listing(repo_id: str, folder: Path, offline: bool) -> list[str]:
    """Every file of the repo at the snapshot's commit: the client's cached tree listing (written
    by the download that resolved the commit), else the Hub's, else (offline) what is cached."""
    try:
        from huggingface_hub import get_cached_repo_tree
        from huggingface_hub.errors import CachedRepoTreeNotFoundError
    except ImportError:  # a client older than its tree cache
        get_cached_repo_tree = None
    if get_cached_repo_tree is not None:
        with contextlib.suppress(CachedRepoTreeNotFoundError):
            return [entry.path for entry in get_cached_repo_tree(repo_id, repo_type="dataset", revision=folder.name)]
    if offline:
        return sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file())
    from huggingface_hub import HfApi

    return HfApi(endpoint=hub_endpoint()).list_repo_files(repo_id, repo_type="dataset", revision=folder.name)


def read_card(path: Path) -> dict:
    """The YAML header of the dataset card ({} when there is none)."""
    from huggingface_hub.repocard import metadata_load

    if not path.is_file():
        return {}
    try:
        return metadata_load(path) or {}
    except (yaml.YAMLError, ValueError):  # a malformed card header: fall back to the file-name conventions
        return {}


def split_files(listing: list[str], card: dict, split: str, where: str) -> list[str]:
    """The data files of `split`: the card's `configs` when it declares them, else the Hub's
    file-name conventions."""
    data = [path for path in listing if is_data_file(path)]
    splits = {name: files for name, files in (configured_splits(card, data) or convention_splits(data)).items() if files}
    if split in splits:
        return splits[split]
    if not data:
        raise InputError(f"dataset {where} has no parquet, jsonl, json or csv data files (sclora never runs a loading "
                         "script); convert it to one of those, or pass a local file.")
    raise InputError(f"dataset {where} has no split {split!r} (it has {', '.join(sorted(splits))}); "
                     "name one with ORG/NAME:SPLIT.")


def is_data_file(path: str) -> bool:
    name = path.rsplit("/", 1)[-1]
    return path.lower().endswith(DATA_SUFFIXES) and name not in NOT_DATA and not name.startswith(".")


def configured_splits(card: dict, data: list[str]) -> dict[str, list[str]]:
    """{split: files} of the card's default config (`default: true`, else `default`, else the
    first), its `data_files` globs matched against the data files; {} when it declares none."""
    configs = card.get("configs") if isinstance(card, dict) else None
    if not isinstance(configs, list) or not configs or not all(isinstance(c, dict) for c in configs):
        return {}
    chosen = next((c for c in configs if c.get("default")), None)
    chosen = chosen or next((c for c in configs if c.get("config_name") == "default"), configs[0])
    globs = data_file_globs(chosen.get("data_files"))
    return {split: [p for p in data if any(glob_regex(g).fullmatch(p) for g in patterns)] for split, patterns in globs.items()}


def data_file_globs(value) -> dict[str, list[str]]:
    """A config's `data_files` in any of its card forms (a glob, a list of globs, a list of
    {split, path}, a {split: path} mapping) as {split: [globs]}."""
    if isinstance(value, str):
        return {"train": [value]}
    if isinstance(value, dict):
        return {str(split): as_list(paths) for split, paths in value.items()}
    if isinstance(value, list) and all(isinstance(item, dict) for item in value):
        return {str(item.get("split", "train")): as_list(item.get("path")) for item in value}
    if isinstance(value, list):
        return {"train": [str(item) for item in value]}
    return {}


def as_list(paths) -> list[str]:
    return [str(p) for p in paths] if isinstance(paths, list) else [str(paths)] if paths else []


def glob_regex(pattern: str) -> re.Pattern:
    """A repo-path glob as a regex: `*` stays within a folder, `**` crosses folders."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[" and "]" in pattern[i + 1:]:
            end = pattern.index("]", i + 1)
            out, i = out + "[" + pattern[i + 1:end].replace("!", "^", 1) + "]", end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def convention_splits(data: list[str]) -> dict[str, list[str]]:
    """{split: files} by name: sharded `data/SPLIT-00000-of-00001.*` files, else a split keyword
    in a folder name, else in a file name; with no keyword anywhere every file is `train`."""
    sharded: dict[str, list[str]] = {}
    for path in data:
        match = SHARDED.match(path)
        if match:
            sharded.setdefault(match["split"], []).append(path)
    if sharded:
        return sharded
    for templates in (DIR_TEMPLATES, NAME_TEMPLATES):
        found = {split: [p for p in data if keyword_match(p, keywords, templates)] for split, keywords in SPLIT_KEYWORDS.items()}
        found = {split: files for split, files in found.items() if files}
        if found:
            return found
    return {"train": list(data)} if data else {}


def keyword_match(path: str, keywords: tuple[str, ...], templates: tuple[str, ...]) -> bool:
    return any(re.fullmatch(template.format(k=re.escape(keyword)), path) for keyword in keywords for template in templates)


@contextlib.contextmanager
def hub_dataset_errors(label: str, revision: str | None, offline: bool, instead: str) -> Iterator[None]:
    """The client's exceptions as one sentence each, saying what to do instead."""
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    endpoint = hub_endpoint()
    try:
        yield
    except LocalEntryNotFoundError as exc:
        if offline:
            raise InputError(f"dataset {label} is not in the local Hub cache and HF_HUB_OFFLINE is set: run once online "
                             f"to cache it, or use {instead}.") from exc
        raise RemoteError(f"cannot reach the Hub at {endpoint} to download dataset {label}, and it is not in the local "
                          f"cache: check the network and HF_ENDPOINT, or use {instead}.") from exc
    except RevisionNotFoundError as exc:
        raise InputError(f"dataset {label} has no revision {revision!r} at {endpoint}; check the @revision.") from exc
    except (RepositoryNotFoundError, GatedRepoError) as exc:
        raise InputError(f"dataset {label} was not found at {endpoint} (or it is private or gated and no token grants "
                         "access); check the id, or set HF_TOKEN.") from exc
    except HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        raise RemoteError(f"the Hub at {endpoint} refused to send dataset {label} (HTTP {status}); try again later, "
                          f"or use {instead}.") from exc
    except Exception as exc:
        if not is_network_error(exc):
            raise
        raise RemoteError(f"cannot reach the Hub at {endpoint} to download dataset {label} ({type(exc).__name__}); "
                          f"check the network and HF_ENDPOINT, or use {instead}.") from exc
