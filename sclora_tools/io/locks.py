"""A lock beside each output, so two processes never write the same artefact at once.

`output_lock(final)` holds `.NAME.lock` in the parent of `final` with flock, the kernel's lock: it
dies with its holder, even one killed by SIGKILL, so a file a killed run left behind never blocks
the next one. A second writer is refused at once with one sentence (BusyError: it would only
replace the first one's result, so waiting buys nothing); the embedded model's cache waits instead
(`wait=`), since both processes want the very same directory. A clean release removes the file.
The holder is the only process that may write `final`, so it clears the staging a killed run left
(io/atomic.py). Stages take the lock for their whole run with `@holds_output_lock`.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from .. import launcher
from ..errors import BusyError
from .atomic import remove_stale_staging

try:
    import fcntl
except ImportError:  # Windows: no flock; filelock's portable lock (a dependency of huggingface_hub) instead
    fcntl = None
    from filelock import FileLock, Timeout

POLL_SECONDS = 0.2


def lock_path(final: Path) -> Path:
    return Path(final).parent / f".{Path(final).name}.lock"


@contextlib.contextmanager
def output_lock(final: Path, wait: float = 0.0, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold the lock of `final` for the block; wait up to `wait` seconds for another holder
    (calling `on_wait` once when it has to), then refuse with BusyError."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    path = lock_path(final)
    with flock_held(path, final, wait, on_wait) if fcntl else portable_lock(path, final, wait):
        remove_stale_staging(final)
        yield


def holds_output_lock(*parameters: str):
    """Decorate a stage: hold the lock of the output named by the first of `parameters` that is
    not None (no lock when none is) for the whole call. Under torchrun or accelerate launch only
    global rank 0 takes it: the ranks of one run share their output, rank 0 writes it."""

    def decorate(stage):
        signature = inspect.signature(stage)

        @functools.wraps(stage)
        def locked(*args, **kwargs):
            arguments = signature.bind(*args, **kwargs).arguments
            target = next((arguments[name] for name in parameters if arguments.get(name) is not None), None)
            if target is None or launcher.is_helper_rank():
                return stage(*args, **kwargs)
            with output_lock(Path(target)):
                return stage(*args, **kwargs)

        return locked

    return decorate


@contextlib.contextmanager
def flock_held(path: Path, final: Path, wait: float, on_wait: Callable[[], None] | None) -> Iterator[None]:
    deadline, waited = time.monotonic() + wait, False
    while (fd := try_flock(path)) is None or isinstance(fd, str):
        if time.monotonic() >= deadline:
            raise busy(final, path, fd)
        if on_wait is not None and not waited:
            on_wait()
        waited = True
        time.sleep(POLL_SECONDS)
    try:
        yield
    finally:
        release(path, fd)


def try_flock(path: Path) -> int | str | None:
    """The descriptor holding the lock, or the holder's pid text when another process holds it
    (None when the file was replaced meanwhile: try again)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        os.close(fd)
        return holder
    if not same_file(fd, path):  # a holder removed it between our open and our flock
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def release(path: Path, fd: int) -> None:
    """Remove the file while still holding it (a waiter then retries on a fresh file), then unlock."""
    try:
        if same_file(fd, path):
            path.unlink()
    finally:
        os.close(fd)


@contextlib.contextmanager
def portable_lock(path: Path, final: Path, wait: float) -> Iterator[None]:
    lock = FileLock(str(path), timeout=wait)
    try:
        lock.acquire()
    except Timeout:
        raise busy(final, path, None) from None
    try:
        yield
    finally:
        lock.release()


def busy(final: Path, path: Path, holder: str | None) -> BusyError:
    who = f" (pid {holder})" if holder and holder.isdigit() else ""
    return BusyError(f"another sclora process{who} is writing {final} right now (it holds {path.name}); "
                     "wait for it to finish, or choose another output directory.")
