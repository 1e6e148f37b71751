"""`sclora push`: publish a verified merge to the Hub (or to a local folder) with a model card that
records beta, the calibration sets and the W0 check. Refuses an unverified or altered merge, plans
the publishable folder, and hands it to the Hub client (io/hub.py): one commit, then the remote
files checked against the local hashes."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from .. import ui
from ..errors import InputError, UsageError, VerificationError
from ..io.atomic import MANIFEST, refuse_foreign_directory, staged_output
from ..io.card import WHATS, is_hub_id, render_card
from ..io.hub import Planned, hub_token, upload
from ..io.license import declared_license
from ..io.local_paths import hide_in
from ..io.locks import holds_output_lock
from ..io.manifest import Manifest, load_manifest, verify_files

CARD = "README.md"
PROVENANCE = "sclora_manifest.json"
EVAL_REPORT = "eval.json"
EVAL_COPY = "sclora_eval.json"


@holds_output_lock("to")
def push(
    merge_dir: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    what: str = "all",
    dry_run: bool = False,
    to: str | Path | None = None,
    keep_local_paths: bool = False,
    progress: bool = True,
) -> dict:
    """Publish a merge output as `what` to `repo_id` (or plan it, or write it to `to`); returns the push record.

    Local paths in the card, the provenance manifest and the eval report become `<local>/NAME`
    unless `keep_local_paths` (io/local_paths.py)."""
    check_options(repo_id, what, revision, commit_message, dry_run, to)
    merge_dir = Path(merge_dir)
    manifest = load_manifest(merge_dir, "merge")
    check_verification(manifest)
    check_layout(merge_dir, manifest, what)
    verify_files(merge_dir, manifest)
    public = (lambda document: document) if keep_local_paths else hide_in
    eval_report, public_manifest = public(read_eval_report(merge_dir)), public(manifest.raw)
    token = hub_token()
    card = redact(render_card(public_manifest, repo_id=repo_id, what=what, eval_report=eval_report,
                              license_info=base_license(merge_dir, manifest)), token)
    manifest_text = (merge_dir / MANIFEST).read_bytes().decode("utf-8") if keep_local_paths else json_text(public_manifest)
    eval_text = json_text(without_examples(eval_report)) if eval_report is not None else None
    files = plan_files(merge_dir, manifest, what, card.encode("utf-8"), redact(manifest_text, token).encode("utf-8"),
                       redact(eval_text, token).encode("utf-8") if eval_text is not None else None)
    record = {
        "repo_id": repo_id, "what": what, "revision": revision or "main", "mode": "dry-run" if dry_run else "local" if to else "hub",
        "local_paths": "kept" if keep_local_paths else "hidden",
        "merge_dir": str(merge_dir.resolve()), "verification": {"passed": True, "checked": manifest.verification.checked},
        "files": [f.describe() for f in files], "bytes": sum(f.size for f in files), "card": card,
    }
    if to is not None:
        record["output"] = str(write_local(Path(to), merge_dir, files))
    elif not dry_run:
        record.update(upload(files, repo_id, token, private, revision, commit_message or default_message(manifest, what),
                             progress and not ui.quiet()))
    report(record)
    return record


# ----------------------------------------------------------------------------- checks (no network)


def check_options(repo_id, what, revision, commit_message, dry_run, to) -> None:
    if not is_hub_id(repo_id):
        raise UsageError(f"--repo-id {repo_id!r} is not a Hub repository id; use ORG/NAME (letters, digits, '-', '_', '.').")
    if what not in WHATS:
        raise UsageError(f"--what must be one of {', '.join(WHATS)}, not {what!r}.")
    if revision is not None and (not revision.strip() or any(c.isspace() for c in revision)):
        raise UsageError(f"--revision {revision!r} is not a branch name; give a name without spaces, e.g. v1.")
    if commit_message is not None and not commit_message.strip():
        raise UsageError("--commit-message is empty; give a short summary or leave the option out.")
    if dry_run and to is not None:
        raise UsageError("--dry-run and --to exclude each other: --dry-run only prints the plan, --to writes the folder.")


def check_verification(manifest: Manifest) -> None:
    if manifest.verification is None:
        raise VerificationError("the merge manifest has no W0 verification record; re-run `sclora merge` before publishing.")
    if not manifest.verification.all_passed():
        raise VerificationError("the merge's W0 check did not pass, so the model cannot be trusted; re-run init and merge, nothing was published.")


def check_layout(merge_dir: Path, manifest: Manifest, what: str) -> None:
    if manifest.config.output != "merged":
        raise InputError(f"{merge_dir} holds only the rebuilt base model (merge --rebuild-base); publish the output of `sclora merge -o DIR`.")
    needed = {"all": ("merged", "lora"), "merged": ("merged",), "lora": ("lora",)}[what]
    recorded = manifest.files
    for folder in needed:
        if not any(name.startswith(f"{folder}/") for name in recorded):
            raise InputError(f"{merge_dir} has no {folder}/ recorded in its manifest; re-run `sclora merge -o DIR`.")
        for path in sorted((merge_dir / folder).rglob("*")):
            relative = path.relative_to(merge_dir).as_posix()
            if (path.is_file() or path.is_symlink()) and relative not in recorded:
                raise VerificationError(
                    f"{merge_dir / relative} is not recorded in {merge_dir / MANIFEST}; it was added after the merge: remove it or re-run merge."
                )


def read_eval_report(merge_dir: Path) -> dict | None:
    """The `sclora eval` report of this merge, if any."""
    path = merge_dir / EVAL_REPORT
    if not path.is_file():
        return None
    try:
        report_ = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path} is not valid JSON ({exc}); re-run `sclora eval` or remove the file.") from exc
    if not isinstance(report_, dict):
        raise InputError(f"{path} does not hold an eval report object; re-run `sclora eval` or remove the file.")
    return report_


def without_examples(eval_report: dict) -> dict:
    """The report to publish: no example generations (answers to harmful prompts do not belong in
    a public repository)."""
    return {key: value for key, value in eval_report.items() if key != "examples"}


def json_text(document: dict) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def base_license(merge_dir: Path, manifest: Manifest) -> dict:
    """license / license_name / license_link the base model declares (its README front matter, or config.json)."""
    model_path = manifest.model.path
    cards = [merge_dir / "merged" / CARD] + ([Path(model_path) / CARD] if model_path else [])
    return declared_license(cards, merge_dir / "merged" / "config.json")


def plan_files(merge_dir: Path, manifest: Manifest, what: str, card: bytes, manifest_bytes: bytes, eval_bytes: bytes | None) -> list[Planned]:
    """The publishable folder: merged model at the root (all, merged), the LoRA under lora/ (all)
    or at the root (lora), the card, the provenance manifest and the eval report."""
    recorded = manifest.files
    moves = {"all": {"merged/": "", "lora/": "lora/"}, "merged": {"merged/": ""}, "lora": {"lora/": ""}}[what]
    files = []
    for relative in sorted(recorded):
        for prefix, target in moves.items():
            if relative.startswith(prefix) and relative != f"merged/{CARD}":  # the base's card; ours replaces it
                source = merge_dir / relative
                files.append(Planned(target + relative[len(prefix):], source.stat().st_size, recorded[relative], source, origin=relative))
    generated = [(CARD, card), (PROVENANCE, manifest_bytes)] + ([(EVAL_COPY, eval_bytes)] if eval_bytes is not None else [])
    for path, data in generated:
        files.append(Planned(path, len(data), hashlib.sha256(data).hexdigest(), data=data))
    paths = [f.path for f in files]
    if len(set(paths)) != len(paths):
        raise InputError(f"two files of {merge_dir} would land on the same path in the repository; re-run `sclora merge -o DIR`.")
    return files


def default_message(manifest: Manifest, what: str) -> str:
    config = manifest.config
    return f"sclora push: {config.method} beta={config.beta} r={config.rank} ({what})"


# ----------------------------------------------------------------------------- secrets


def redact(text: str, token: str | None) -> str:
    if token and token in text:
        ui.warn("the Hub token appeared in a file to publish; it was replaced by [redacted].")
        return text.replace(token, "[redacted]")
    return text


# ----------------------------------------------------------------------------- local folder


def write_local(target: Path, merge_dir: Path, files: list[Planned]) -> Path:
    """Write the publishable folder to `target` atomically (temporary sibling, then rename)."""
    resolved, source = target.resolve(), merge_dir.resolve()
    if resolved == source or source in resolved.parents or resolved in source.parents:
        raise UsageError(f"--to {target} overlaps the merge output {merge_dir}; choose a directory outside it.")
    earlier_push = (target / PROVENANCE).is_file() and (target / CARD).is_file() and not (target / MANIFEST).exists()
    if not earlier_push:
        if (target / MANIFEST).exists():
            raise InputError(f"--to {target} holds an sclora artefact (manifest.json); choose an empty or new directory.")
        refuse_foreign_directory(target)
    with staged_output(target) as staging:
        for planned in files:
            copy_planned(planned, staging / planned.path)
    return target


def copy_planned(planned: Planned, destination: Path) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    if planned.source is not None:
        shutil.copyfile(planned.source, destination)
    else:
        destination.write_bytes(planned.data)
    if destination.stat().st_size != planned.size:
        raise VerificationError(f"{planned.origin} changed while it was copied; run push again.")


# ----------------------------------------------------------------------------- summary


def human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


def report(record: dict) -> None:
    mode = record["mode"]
    where = {"dry-run": "dry run: nothing written, no network", "local": f"written to {record.get('output')}",
             "hub": record.get("url", "")}[mode]
    rows = [("repository", f"{record['repo_id']} ({record['revision']})"), ("published", record["what"]), ("destination", where),
            ("files", f"{len(record['files'])} files, {human(record['bytes'])}"),
            ("W0 check", f"PASSED: {record['verification']['checked']} tensors bit-identical to the source")]
    if mode == "hub":
        rows.append(("commit", f"{record['commit']}" if record["changed"] else f"no changes: {record['commit']} already holds these files"))
        rows.append(("remote check", "every file's size and hash match"))
        if record.get("deleted"):
            rows.append(("removed stale", ", ".join(record["deleted"])))
    ui.show(ui.summary_table("sclora push", rows))
    if mode == "dry-run":
        files = ui.summary_table("files", [(f["path"], human(f["size"])) for f in record["files"]])
        ui.show(files)
