"""What a calibration serves: the covariance site each init method reads, the `--for` list, the
model it was made for, and a one-sentence refusal for a method it cannot serve. Shared by the
stages that read a calibration (init, sweep) and the PEFT integration."""

from __future__ import annotations

from pathlib import Path

from .. import models
from ..core.methods import METHODS
from ..errors import InputError, MismatchError, UsageError
from ..io.checkpoint import CheckpointReader
from ..io.manifest import Manifest
from ..io.manifest_types import SiteRecord

ALL = "all"


def sites_for_method(calibration: Manifest, method: str) -> dict[str, SiteRecord]:
    """target -> the site `method` reads (empty for methods that read no covariance)."""
    kind = METHODS[method].site
    if kind is None:
        return {}
    config = calibration.config
    return config.site_of_target() if kind == "subspace" else config.input_site_of_target()


def parse_for(text: str | list[str] | None) -> list[str]:
    """`--for` as given (comma-separated names or `all`) -> the sorted method names a calibration
    must serve, always including sclora."""
    parts = text if isinstance(text, list) else [p.strip() for p in (text or "").split(",") if p.strip()]
    if ALL in parts:
        return sorted(METHODS)
    unknown = [p for p in parts if p not in METHODS]
    if unknown:
        raise UsageError(f"--for {unknown[0]!r} is not a method; choose from {', '.join(METHODS)} or all.")
    return sorted({"sclora", *parts})


def needs_every_input(methods: list[str]) -> bool:
    return any(METHODS[m].site == "input" for m in methods)


def check_serves(calibration: Manifest, method: str) -> None:
    """Refuse, in one sentence, a method whose covariances this calibration did not store."""
    if METHODS[method].site != "input":
        return
    config = calibration.config
    lacking = sorted(set(config.site_of_target()) - set(config.input_site_of_target()))
    if lacking:
        more = f" and {len(lacking) - 1} more layer{'s' if len(lacking) > 2 else ''}" if len(lacking) > 1 else ""
        raise InputError(
            f"--method {method} needs the input-side covariance of every target, which this calibration lacks for "
            f"{lacking[0]}{more}; re-run `sclora calibrate` with `--for {method}` (or `--for all`)."
        )


def locate_model(calibration: Manifest, override: str | Path | None) -> Path:
    """The calibrated model's directory (or --model), checked against the recorded weight hashes."""
    if override is not None:
        path = Path(override).expanduser()
        if not path.is_dir():
            raise InputError(f"--model {override} is not a directory; pass the local model directory.")
    else:
        recorded = Path(calibration.model.path)
        path = recorded if recorded.is_dir() else models.resolve_model(calibration.model.spec).path
    if models.weight_file_hashes(path) != calibration.model.weight_files:
        raise MismatchError(
            f"the weights in {path} are not the ones this calibration was made for ({calibration.model.id}); "
            "pass --model with the calibrated model or re-run calibrate."
        )
    return path.resolve()


def check_ranks(reader: CheckpointReader, targets, rank: int) -> None:
    for target in targets:
        if f"{target}.weight" not in reader:
            raise MismatchError(f"the calibration targets {target}, which the model in {reader.model_dir} does not have; "
                                "pass --model with the calibrated model, or re-run calibrate.")
        d_out, d_in = reader.shape_of(f"{target}.weight")
        if rank > min(d_out, d_in):
            raise UsageError(f"--rank {rank} exceeds min(d_out, d_in) = {min(d_out, d_in)} of {target}; choose a rank <= {min(d_out, d_in)}.")
