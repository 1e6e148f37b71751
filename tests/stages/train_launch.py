"""Run by torchrun (`-m tests.stages.train_launch RUN OUTPUT KEEP WRITES -- TRAIN OPTIONS`) for
tests/stages/test_train_distributed.py: `sclora train` on every rank; then rank 0 copies the output
to KEEP and drops its last checkpoint, and every rank runs `sclora train --resume --json`, which
must continue from the checkpoint before. Ranks other than 0 record, through an audit hook, every
change they make under OUTPUT from Python (opening for writing, creating, renaming, removing) and
write the list to WRITES."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import torch.distributed as dist

from sclora_tools.cli.app import app

WRITE_EVENTS = {"os.mkdir", "os.rename", "os.remove", "os.rmdir", "shutil.rmtree", "shutil.copyfile", "os.truncate", "os.symlink"}


def opens_for_writing(args: tuple) -> bool:
    path, mode, flags = (args + (None, None))[:3]
    return bool(mode and any(c in str(mode) for c in "wax+")) or bool(flags and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))


def recorder(root: str, seen: set[str]):
    def hook(event: str, args: tuple) -> None:
        if event in WRITE_EVENTS or (event == "open" and opens_for_writing(args)):
            for path in args[:2]:
                if isinstance(path, (str, os.PathLike)) and os.path.abspath(path).startswith(root):
                    seen.add(os.path.relpath(os.path.abspath(path), root))

    return hook


def sclora(arguments: list[str]) -> None:
    try:
        app(arguments, standalone_mode=False)
    except SystemExit as exit_:
        if exit_.code:
            raise


def main(run: str, output: str, keep: str, writes: str, options: list[str]) -> None:
    rank, seen = int(os.environ["RANK"]), set()
    if rank != 0:
        sys.addaudithook(recorder(os.path.abspath(output), seen))
    command = ["train", run, "-o", output, *options]
    sclora(command)
    dist.barrier()
    if rank == 0:
        shutil.copytree(output, keep)
        last = max(Path(output, "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
        shutil.rmtree(last)
    dist.barrier()
    sclora([*command, "--resume", "--json"])
    if rank != 0:
        Path(writes).write_text(json.dumps(sorted(seen)))


if __name__ == "__main__":
    separator = sys.argv.index("--")
    main(*sys.argv[1:separator], sys.argv[separator + 1 :])
