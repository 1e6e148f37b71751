"""A fork server for the subprocess tests: it imports sclora with torch, transformers and peft ONCE
(about 15 s on a busy machine), then forks one child per run.

A child is a real process that starts a whole `sclora ARGS` command (or a driver function): it has
its own memory, its own files and locks, and SIGKILL, SIGINT or SIGTERM reach it exactly as they
reach a freshly started `sclora`. Only the imports are shared, so ten kills of a stage cost ten
stage starts, not ten interpreter starts. Nothing tensor-related runs in the server before a fork
(no thread pool exists yet), which keeps forking safe.

Protocol, one JSON object per line: on stdin
  {"op": "start", "argv": [...] or "call": "module:function" + "args": [...], "cwd": ..., "env": {...},
   "stdout": path, "stderr": path}   -> {"pid": N}
  {"op": "wait", "pid": N, "timeout": seconds}  -> {"returncode": int (negative: killed by that signal) or null}
and the server answers on stdout; it first prints {"ready": true}.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
import time
import traceback

# module -> lazy attributes to resolve before forking (transformers and peft import on first access)
PRELOAD = {
    "sclora_tools.cli.app": ("main",),
    "transformers": ("AutoModelForCausalLM", "AutoTokenizer", "PrinterCallback", "Trainer", "TrainingArguments", "LlamaForCausalLM"),
    "peft": ("LoraConfig", "PeftModel"),
    "safetensors.torch": (),
    "huggingface_hub": ("HfApi",),
    "jinja2": (),
}


def preload() -> None:
    for module, attributes in PRELOAD.items():
        imported = importlib.import_module(module)
        for attribute in attributes:
            getattr(imported, attribute)


def run_child(request: dict) -> None:
    """In the forked child: redirect the standard streams, run the command, exit with its code."""
    code = 1
    try:
        os.setpgid(0, 0)  # its own process group: a signal for it never reaches the server
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        redirect(request)
        os.chdir(request.get("cwd") or os.getcwd())
        for name, value in (request.get("env") or {}).items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        code = run(request)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - report anything, then exit like a crashed process
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001 - the stream may be gone; exiting matters more
                pass
        os._exit(code)


def redirect(request: dict) -> None:
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(target, fd)
        os.close(target)


def run(request: dict) -> int:
    if "argv" in request:
        sys.argv = ["sclora", *request["argv"]]
        importlib.import_module("sclora_tools.cli.app").main()
        return 0
    module, _, function = request["call"].partition(":")
    result = getattr(importlib.import_module(module), function)(*request.get("args", []))
    return int(result or 0)


def wait(pid: int, timeout: float) -> int | None:
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.005)


def reply(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def serve() -> None:
    preload()
    reply({"ready": True})
    for line in sys.stdin:
        request = json.loads(line)
        if request["op"] == "start":
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                run_child(request)
            reply({"pid": pid})
        elif request["op"] == "wait":
            reply({"returncode": wait(request["pid"], request["timeout"])})


if __name__ == "__main__":
    serve()
