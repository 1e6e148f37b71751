"""The settings a manifest records, one record per artefact kind: how calibration ran, how the
adapter was initialised, every training setting. Read tolerantly (see manifest_types.py); a new
setting is a field with a default, so manifests written before it still read."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .manifest_types import Record, SiteRecord, as_tuple


@dataclass(frozen=True)
class CalibrationConfig(Record):
    """How calibration ran: the target layers, the covariance sites that serve them, the sampling,
    how the covariances are stored, which engine ran on how many ranks and which samples each took.
    The defaults describe manifests written before a field existed (one process, in memory,
    full float64 matrices)."""

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
    for_methods: tuple[str, ...] = ("sclora",)  # the init methods it stores covariances for (`--for`)
    storage: str = "float64"  # a form of core/covariance_codec.py
    storage_requested: str | None = None  # what was asked (auto resolves by token count)
    engine: str = "in-memory"  # in-memory, device-map or sequential (one decoder block at a time)
    sequential: str | None = None  # what was asked: auto, on or off
    model_bytes: int | None = None
    available_bytes: int | None = None
    world_size: int = 1
    samples_per_rank: dict[str, tuple[tuple[int, ...], ...]] = field(default_factory=dict)  # role -> per rank, sample positions
    checkpoint_every: int = 0

    @classmethod
    def typed(cls, values: dict[str, Any]) -> dict[str, Any]:
        sites = tuple(SiteRecord.from_dict(site) for site in as_tuple(values.get("sites")))
        methods = as_tuple(values.get("for_methods")) or ("sclora",)
        per_rank = {str(role): tuple(tuple(ranks) for ranks in as_tuple(shares))
                    for role, shares in (values.get("samples_per_rank") or {}).items()}
        return {**values, "targets": as_tuple(values.get("targets")), "sites": sites, "for_methods": methods, "samples_per_rank": per_rank}

    def site_of_target(self) -> dict[str, SiteRecord]:
        """target module -> the site SC-LoRA reads: its output site where calibrate stored one (the
        smaller side), else the input site that serves it."""
        sites: dict[str, SiteRecord] = {}
        for site in self.sites:
            for target in site.serves:
                if target not in sites or site.side == "output":
                    sites[target] = site
        return sites

    def input_site_of_target(self) -> dict[str, SiteRecord]:
        """target module -> the input-side site that serves it (targets without one are absent)."""
        return {target: site for site in self.sites if site.side == "input" for target in site.serves}


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
    method_settings: MethodSettings | None = None

    @classmethod
    def typed(cls, values: dict[str, Any]) -> dict[str, Any]:
        settings = values.get("method_settings")
        return {**values, "targets": as_tuple(values.get("targets")),
                "method_settings": MethodSettings.from_dict(settings) if isinstance(settings, Mapping) else None}


@dataclass(frozen=True)
class MethodSettings(Record):
    """What an init method is (one line) and which covariances it read ("input-side Cov-", ...)."""

    summary: str | None = None
    reads: tuple[str, ...] = ()

    @classmethod
    def typed(cls, values: dict[str, Any]) -> dict[str, Any]:
        return {**values, "reads": as_tuple(values.get("reads"))}


@dataclass(frozen=True)
class SweepConfig(Record):
    """`sclora sweep`: the betas, the rank, the layers, and whether init folders were written."""

    betas: tuple[float, ...] = ()
    rank: int | None = None
    targets: tuple[str, ...] = ()
    normalization: str | None = None
    init: bool = False
    alpha: float | None = None

    @classmethod
    def typed(cls, values: dict[str, Any]) -> dict[str, Any]:
        return {**values, "betas": as_tuple(values.get("betas")), "targets": as_tuple(values.get("targets"))}


@dataclass(frozen=True)
class TrainSettings(Record):
    """Every training setting: what `train` hands to the Trainer, records and reports.

    `samples` is the number of samples trained on (after dropping those without response tokens).
    `batch_size` is per process; `world_size` processes trained data-parallel (torchrun / accelerate).
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
    world_size: int = 1

    @property
    def global_batch_size(self) -> int:
        """Sequences per optimiser step, over every process and accumulation step."""
        return self.batch_size * self.grad_accum * self.world_size

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
                                         "merge": MergeConfig, "sweep": SweepConfig}
