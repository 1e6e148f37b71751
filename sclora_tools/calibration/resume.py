"""Checkpoints of calibrate's running sums, so a killed run can finish with `--resume`.

Every N batches the float64 sums of the dataset in progress are written (lossless, packed) to
a sibling of the output directory, `.NAME.calibrate-resume/`, with `state.json` naming them and
recording what produced them (the run's identity: model hashes, data hashes, settings, rank).
A sums file is written under a new name and state.json is replaced last, so a kill at any
moment leaves the previous consistent checkpoint. `--resume` refuses an identity that differs.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ..core.covariance import SecondMoment
from ..errors import InputError, MismatchError
from ..io.atomic import write_json
from ..io.covariances import CovarianceWriter, open_covariance_file
from ..io.manifest_types import Role
from .distributed import Ranks

STATE_FILE = "state.json"
SUMS_FORM = "float64-packed"


def state_root(output_dir: Path) -> Path:
    output_dir = Path(output_dir)
    return output_dir.parent / f".{output_dir.name}.calibrate-resume"


@dataclass
class Checkpointer:
    """Writes and restores one rank's checkpoints. `every` = 0 writes none."""

    directory: Path
    identity: dict
    every: int
    roles: dict = field(default_factory=dict)
    restored: dict = field(default_factory=dict)

    @classmethod
    def for_run(cls, output_dir: Path, ranks: Ranks, identity: dict, every: int, resume: bool) -> Checkpointer:
        directory = state_root(output_dir)
        if ranks.distributed:
            directory = directory / f"rank-{ranks.rank:05d}-of-{ranks.world_size:05d}"
        identity = json.loads(json.dumps({**identity, "rank": ranks.rank, "world_size": ranks.world_size}))  # as state.json holds it
        checkpointer = cls(directory, identity, every)
        if resume:
            checkpointer.roles = checkpointer.read_state()
            checkpointer.restored = dict(checkpointer.roles)
        elif every > 0:
            shutil.rmtree(directory, ignore_errors=True)  # an earlier run's checkpoints never mix with this one's
        return checkpointer

    def read_state(self) -> dict:
        path = self.directory / STATE_FILE
        if not path.is_file():
            raise InputError(f"there is no calibrate checkpoint to resume at {self.directory}; run without --resume.")
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
            missing = [record["file"] for record in state["roles"].values() if not (self.directory / record["file"]).is_file()]
        except (ValueError, KeyError, TypeError, AttributeError):
            missing = [STATE_FILE]
        if missing:
            raise InputError(f"the calibrate checkpoint at {self.directory} is damaged ({missing[0]}); run without --resume to start over.")
        differing = sorted(key for key in set(state["identity"]) | set(self.identity) if state["identity"].get(key) != self.identity.get(key))
        if differing:
            raise MismatchError(
                f"the checkpoint at {self.directory} was made with other settings or data ({', '.join(differing)} differ); "
                "resume with the same command, or run without --resume to start over."
            )
        return state["roles"]

    def resumed_from(self) -> dict[str, int]:
        """Batches of each dataset that came from the checkpoint (empty for a fresh run)."""
        return {role: record["batches"] for role, record in self.restored.items()}

    def due(self, batches_done: int) -> bool:
        return self.every > 0 and batches_done % self.every == 0

    def complete(self, role: Role) -> bool:
        return self.roles.get(role.short, {}).get("complete", False)

    def restore(self, role: Role, moments: dict[str, SecondMoment]) -> int:
        """Load the saved sums of `role` into `moments`; returns the batches they cover."""
        record = self.roles.get(role.short)
        if record is None:
            return 0
        with open_covariance_file(self.directory / record["file"]) as sums:
            for key, moment in moments.items():
                moment.restore(sums.get(key), record["tokens"])
        return record["batches"]

    def save(self, role: Role, moments: dict[str, SecondMoment], batches: int, complete: bool = False) -> None:
        if self.every <= 0:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"sums-{role.short}-{batches:08d}.safetensors"
        staging = self.directory / f".{name}.tmp"
        writer = CovarianceWriter(staging, {key: m.dim for key, m in moments.items()}, SUMS_FORM)
        for key, moment in moments.items():
            writer.write(key, moment.total)
        writer.close()
        os.replace(staging, self.directory / name)
        tokens = next(iter(moments.values())).tokens if moments else 0
        previous = self.roles.get(role.short, {}).get("file")
        self.roles[role.short] = {"file": name, "batches": batches, "tokens": tokens, "complete": complete}
        write_json(self.directory / STATE_FILE, {"identity": self.identity, "roles": self.roles})
        if previous and previous != name:
            (self.directory / previous).unlink(missing_ok=True)

    def clear(self, output_dir: Path) -> None:
        """Remove every rank's checkpoints once the artefact is written."""
        shutil.rmtree(state_root(output_dir), ignore_errors=True)

