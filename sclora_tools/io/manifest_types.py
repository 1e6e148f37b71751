"""The records of a manifest.json, typed: what a stage read (model, datasets), what it found
(the W0 check, its closing figures) and the Role of each dataset. The settings are in
manifest_settings.py, the Manifest that holds them all in manifest.py.

Every record reads tolerantly with `from_dict`: a key that an older manifest lacks takes the
field's default, and a key this version does not know is skipped here but kept in `Manifest.raw`,
so old and new tools read each other's artefacts and children embed their parents unchanged.
`to_dict()` gives the keys in the order manifests have always stored them. To record one more
fact, add a field with a default to the record that holds it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, TypeVar

KINDS = ("calibration", "init", "train", "merge", "sweep")  # also the order of a lineage
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
    truncated: int | None = None  # samples cut at --max-length (None: not counted by the tool that wrote it)
    commit: str | None = None  # a Hub dataset: the commit `revision` resolved to
    data_files: tuple[str, ...] = ()  # a Hub dataset: the split's files read at that commit

    @classmethod
    def typed(cls, values: dict[str, Any]) -> dict[str, Any]:
        return {**values, "role": Role.parse(values.get("role")), "data_files": as_tuple(values.get("data_files"))}

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "role": self.role.value, "data_files": list(self.data_files)}

    @property
    def argument(self) -> str | None:
        """What loads this dataset again: a file's absolute path (its name alone is only right in the
        folder it was read from), else the registry name or the Hub argument as given."""
        return self.source if self.kind == "file" and self.source else self.name


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
class Summary(Record):
    """A stage's closing figures."""

    seconds: float | None = None


@dataclass(frozen=True)
class CalibrationSummary(Summary):
    """`resumed_batches`: per dataset (short name), the batches restored from a checkpoint."""

    tokens: int | None = None
    resumed_batches: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class InitSummary(Summary):
    """The energy shares exist for subspace methods only (None otherwise)."""

    layers: int | None = None
    correction_bytes: int | None = None
    target_weight_bytes: int | None = None
    correction_fraction: float | None = None
    energy_pos: float | None = None
    energy_neg: float | None = None
    null_gap_ratio_min: float | None = None  # lora-null: where its null spaces sit (stages/init.py null_space_summary)
    null_gap_ratio_median: float | None = None
    layers_not_unique: int | None = None
    null_energy_share_max: float | None = None
    null_energy_share_mean: float | None = None


@dataclass(frozen=True)
class SubspaceDrift(Record):
    """How much of the trained update left S = span(B_init) (core/drift.py)."""

    update_outside_fraction: float | None = None
    b_change_outside_fraction: float | None = None


@dataclass(frozen=True)
class TrainSummary(Summary):
    """`subspace` is None for methods without a subspace (vanilla LoRA)."""

    steps: int = 0
    first_loss: float | None = None
    last_loss: float | None = None
    tokens: int = 0
    subspace: SubspaceDrift | None = None
    update_norm: float | None = None

    @classmethod
    def typed(cls, values: dict[str, Any]) -> dict[str, Any]:
        subspace = values.get("subspace")
        return {**values, "subspace": SubspaceDrift.from_dict(subspace) if subspace else None}


@dataclass(frozen=True)
class MergeSummary(Summary):
    tensors: int | None = None


@dataclass(frozen=True)
class SweepSummary(Summary):
    """`sclora sweep`: how long the sweep itself took (seconds_sweep, init folders excluded) and
    over how many layers."""

    seconds_sweep: float | None = None
    layers: int | None = None


SUMMARY_TYPES: dict[str, type[Summary]] = {"calibration": CalibrationSummary, "init": InitSummary, "train": TrainSummary,
                                           "merge": MergeSummary, "sweep": SweepSummary}


@dataclass(frozen=True)
class PipelineRecord(Record):
    """What a workspace stage was run with (workspace/identity.py): the stage, its identity (a hash
    of the settings, the inputs' manifest hashes and the tool version), the resolved settings and
    the sha256 of each input's manifest."""

    stage: str | None = None
    identity: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, str] = field(default_factory=dict)
