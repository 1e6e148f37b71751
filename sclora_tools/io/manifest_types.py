"""The records of a manifest.json, typed: the contract between the stages.

Every record reads tolerantly with `from_dict`: a key that an older manifest lacks takes the
field's default, and a key this version does not know is skipped here but kept in `Manifest.raw`,
so old and new tools read each other's artefacts and children embed their parents unchanged.
`to_dict()` gives the keys in the order manifests have always stored them. To record one more
setting, add a field with a default to the record that holds it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

KINDS = ("calibration", "init", "train", "merge")  # also the order of a lineage
SHORT_NAMES = {"+": "pos", "-": "neg", "train": "train"}

R = TypeVar("R", bound="Record")


class Role(str, enum.Enum):
    """What a dataset is for, stored as its value: D+ (the new task), D- (what to preserve), or
    the training data."""

    POS = "+"
    NEG = "-"
    TRAIN = "train"

    def __str__(self) -> str:
        return self.value

    @property
    def short(self) -> str:
        """pos, neg or train: the covariance file stems and the Python keyword names."""
        return SHORT_NAMES[self.value]

    @classmethod
    def parse(cls, text: str) -> Role:
        """A role from its stored value ("+") or its short name ("pos")."""
        by_short = {short: value for value, short in SHORT_NAMES.items()}
        return cls(by_short.get(text, text))


CALIBRATION_ROLES = (Role.POS, Role.NEG)


class Record:
    """from_dict / to_dict for the frozen dataclasses below."""

    @classmethod
    def from_dict(cls: type[R], data: Mapping[str, Any] | None) -> R:
        known = {f.name for f in fields(cls)}
        values = {key: value for key, value in (data if isinstance(data, Mapping) else {}).items() if key in known}
        return cls(**cls.typed(values))

    @classmethod
    def typed(cls, values: dict[str, Any]) -> dict[str, Any]:
        """Turn the JSON values of nested records, roles and lists into their types."""
        return values

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def as_tuple(value: Any) -> tuple:
    return tuple(value) if isinstance(value, (list, tuple)) else ()


@dataclass(frozen=True)
class ModelRecord(Record):
    """The base model: what the user asked for, Hub id (or local path), resolved revision, where
    the files were read, and the sha256 of every weight file."""

    spec: str | None = None
    id: str | None = None
    revision: str | None = None
    path: str | None = None
    weight_files: dict[str, str] = field(default_factory=dict)
    checkpoint_dtype: str | None = None
    architecture: str | None = None


@dataclass(frozen=True)
class DatasetRecord(Record):
    """One dataset as it was used: where it came from, how much of it, and the sha256 of the texts."""

    role: Role
    name: str | None = None
    kind: str | None = None
    source: str | None = None
    split: str | None = None
    revision: str | None = None
    rows_available: int | None = None
    samples: int | None = None
    tokens: int | None = None
    texts_sha256: str | None = None

    @classmethod
    def typed(cls, values: dict[str, Any]) -> dict[str, Any]:
        return {**values, "role": Role.parse(values.get("role"))}

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "role": self.role.value}


@dataclass(frozen=True)
class SiteRecord(Record):
    """Where calibration collected one covariance: the input or output of `module`, serving the
    targets that share it."""

    key: str
    module: str
    side: str
    dim: int
    serves: tuple[str, ...] = ()

    @classmethod
    def typed(cls, values: dict[str, Any]) -> dict[str, Any]:
        return {**values, "serves": as_tuple(values.get("serves"))}


@dataclass(frozen=True)
class CalibrationConfig(Record):
    targets: tuple[str, ...] = ()
    sites: tuple[SiteRecord, ...] = ()
    samples: int | None = None
    max_length: int | None = None
    batch_size: int | None = None
    dtype: str | None = None
    device: str | None = None
    seed: int = 0
    normalization: str = "token"
    accumulate_dtype: str = "float64"

    @classmethod
    def typed(cls, values: dict[str, Any]) -> dict[str, Any]:
        sites = tuple(SiteRecord.from_dict(site) for site in as_tuple(values.get("sites")))
        return {**values, "targets": as_tuple(values.get("targets")), "sites": sites}

    def site_of_target(self) -> dict[str, SiteRecord]:
        """target module -> the site whose covariance serves it."""
        return {target: site for site in self.sites for target in site.serves}


@dataclass(frozen=True)
class InitConfig(Record):
    """The adapter's initialisation. None where a manifest does not say."""

    method: str | None = None
    beta: float | None = None
    rank: int | None = None
    alpha: float | None = None
    scale: float | None = None
    seed: int = 0
    targets: tuple[str, ...] = ()
    normalization: str | None = None
    checkpoint_dtype: str | None = None

    @classmethod
    def typed(cls, values: dict[str, Any]) -> dict[str, Any]:
        return {**values, "targets": as_tuple(values.get("targets"))}


@dataclass(frozen=True)
class TrainSettings(Record):
    """Every training setting: what `train` hands to the Trainer, records and reports.

    `samples` is the number of samples trained on (after dropping those without response tokens).
    The optimiser, schedule, warm-up and weight decay are the paper's recipe, fixed."""

    data: str | None = None
    samples: int = 0
    epochs: float = 1.0
    max_steps: int | None = None
    lr: float = 2e-5
    batch_size: int = 8
    grad_accum: int = 1
    max_length: int = 512
    seed: int = 0
    freeze_a: bool = False
    freeze_b: bool = False
    gradient_checkpointing: bool = False
    bf16: bool = False
    optimizer: str = "adamw_torch"
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0

    def adapter_training(self) -> str:
        """Which factors train, in words."""
        if self.freeze_a:
            return "A frozen"
        return "B frozen (updates stay in S)" if self.freeze_b else "A and B train"


@dataclass(frozen=True)
class TrainConfig(InitConfig):
    """A train manifest's config: its init's settings plus the training settings."""

    train: TrainSettings | None = None

    @classmethod
    def typed(cls, values: dict[str, Any]) -> dict[str, Any]:
        train = values.get("train")
        return {**super().typed(values), "train": TrainSettings.from_dict(train) if isinstance(train, Mapping) else None}


@dataclass(frozen=True)
class MergeConfig(TrainConfig):
    """A merge manifest's config: its parent's settings plus what was written (merged or base)."""

    output: str | None = None


CONFIG_TYPES: dict[str, type[Record]] = {"calibration": CalibrationConfig, "init": InitConfig, "train": TrainConfig,
                                         "merge": MergeConfig}


@dataclass(frozen=True)
class VerificationRecord(Record):
    """merge's W0 check: every rebuilt tensor's sha256 against the source checkpoint."""

    passed: Any = None
    checked: int | None = None
    scheme: str | None = None
    correction_bytes: int | None = None
    correction_fraction_of_target_weights: float | None = None
    tensors: dict[str, Any] = field(default_factory=dict)

    def all_passed(self) -> bool:
        """True only when the check passed, checked something, and every tensor matched."""
        tensors = self.tensors if isinstance(self.tensors, Mapping) else {}
        return self.passed is True and bool(self.checked) and all(
            isinstance(t, Mapping) and t.get("ok") is True for t in tensors.values())


@dataclass(frozen=True)
class Parent:
    """An artefact this one was made from: its kind, where it was, and its manifest as embedded."""

    kind: str
    path: Path
    manifest: Manifest


@dataclass(frozen=True)
class Manifest:
    """A manifest read back: typed sections, and `raw`, the document as stored (unknown keys
    included), for embedding in a child manifest and for --json output."""

    raw: dict = field(repr=False)
    kind: str
    model: ModelRecord
    config: CalibrationConfig | InitConfig
    datasets: tuple[DatasetRecord, ...]
    parents: tuple[Parent, ...]
    files: dict[str, str]
    summary: dict[str, Any]
    verification: VerificationRecord | None

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Manifest:
        raw = dict(raw)
        kind = str(raw.get("kind", "?"))
        verification = raw.get("verification")
        return cls(
            raw=raw,
            kind=kind,
            model=ModelRecord.from_dict(raw.get("model")),
            config=CONFIG_TYPES.get(kind, InitConfig).from_dict(raw.get("config")),
            datasets=tuple(DatasetRecord.from_dict(d) for d in as_tuple(raw.get("datasets")) if has_role(d)),
            parents=tuple(parent_of(p) for p in as_tuple(raw.get("parents")) if is_parent(p)),
            files=dict(raw.get("files") or {}),
            summary=dict(raw.get("summary") or {}),
            verification=VerificationRecord.from_dict(verification)
            if isinstance(verification, Mapping) and "passed" in verification else None,
        )

    @property
    def command(self) -> str:
        return str(self.raw.get("command") or "")

    @property
    def tool_version(self) -> str | None:
        tool = self.raw.get("tool")
        return tool.get("version") if isinstance(tool, Mapping) else None

    @property
    def source_tensors(self) -> dict[str, str]:
        """init: the sha256 of every tensor of the source checkpoint."""
        return dict(self.raw.get("source_tensors") or {})

    def dataset(self, role: Role) -> DatasetRecord | None:
        """The first dataset recorded with `role`."""
        return next((d for d in self.datasets if d.role is role), None)

    def datasets_with(self, *roles: Role) -> list[DatasetRecord]:
        return [d for d in self.datasets if d.role in roles]

    def parent(self, kind: str) -> Parent | None:
        return next((p for p in self.parents if p.kind == kind), None)

    def lineage(self) -> list[Manifest]:
        """This manifest and every ancestor, one per kind, ordered calibration, init, train, merge."""
        found: dict[str, Manifest] = {}

        def walk(node: Manifest) -> None:
            found.setdefault(node.kind, node)
            for parent in node.parents:
                walk(parent.manifest)

        walk(self)
        return [found[kind] for kind in KINDS if kind in found]


def has_role(entry: Any) -> bool:
    """A dataset record whose role this version knows (others stay in `raw` only)."""
    return isinstance(entry, Mapping) and entry.get("role") in SHORT_NAMES


def is_parent(entry: Any) -> bool:
    return isinstance(entry, Mapping) and isinstance(entry.get("manifest"), Mapping)


def parent_of(entry: Mapping[str, Any]) -> Parent:
    manifest = Manifest.from_dict(entry["manifest"])
    return Parent(kind=str(entry.get("kind") or manifest.kind), path=Path(str(entry.get("path") or "")), manifest=manifest)
