"""The layering of README's ARCHITECTURE section, read from the source with ast (no import runs):

    cli -> workflows -> stages -> evaluation, features, data, models, collect, embedded, ui -> io -> core

no stage imports another stage, nothing below the stages imports a stage, core/ is pure tensor
maths (torch and the standard library), and no file of the package is over 400 lines."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import sclora_tools

PACKAGE = Path(sclora_tools.__file__).parent
ROOT = PACKAGE.parent
MAX_LINES = 400
FACADE = "sclora_tools"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported(source: str, name: str, is_package: bool = False) -> set[str]:
    """Every module (and `module.attribute`) that `source`, the module `name`, imports."""
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = resolve(node, package)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def resolve(node: ast.ImportFrom, package: str) -> str:
    if not node.level:
        return node.module or ""
    parts = package.split(".")
    base = ".".join(parts[: len(parts) - node.level + 1])
    return f"{base}.{node.module}" if node.module else base


def imports_of(name: str, path: Path) -> set[str]:
    return imported(path.read_text(encoding="utf-8"), name, path.name == "__init__.py")


def facade_stages() -> dict[str, str]:
    """sclora_tools.calibrate -> sclora_tools.stages.calibrate, ...: the stage functions the package re-exports."""
    exported = {}
    for node in ast.parse((PACKAGE / "__init__.py").read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("stages."):
            exported.update({f"{FACADE}.{alias.asname or alias.name}": f"{FACADE}.{node.module}" for alias in node.names})
    return exported


def stage_modules() -> set[str]:
    return {name for name in package_modules() if name.startswith(f"{FACADE}.stages.")}


def stages_reached(imports: set[str]) -> set[str]:
    """The stage modules that a set of imports reaches, directly or through the package facade."""
    stages, facade = stage_modules(), facade_stages()
    reached = {facade[name] for name in imports if name in facade}
    reached |= {stage for stage in stages for name in imports if name == stage or name.startswith(f"{stage}.")}
    return reached


def layer(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ""


# ----------------------------------------------------------------------------- the checker itself


def test_the_checker_sees_stage_imports_in_every_spelling():
    merge = f"{FACADE}.stages.merge"
    assert stages_reached(imported("from .train import Collator", merge)) == {f"{FACADE}.stages.train"}
    assert stages_reached(imported("from ..stages import init", merge)) == {f"{FACADE}.stages.init"}
    assert stages_reached(imported("from .. import calibrate", merge)) == {f"{FACADE}.stages.calibrate"}
    assert stages_reached(imported("import sclora_tools.stages.push as p", merge)) == {f"{FACADE}.stages.push"}
    assert stages_reached(imported("from .. import ui, __version__\nfrom ..io.manifest import load_manifest", merge)) == set()


# ----------------------------------------------------------------------------- the rules


@pytest.mark.parametrize("name", sorted(stage_modules()))
def test_no_stage_imports_another_stage(name):
    reached = stages_reached(imports_of(name, package_modules()[name])) - {name}
    assert not reached, f"{name} imports the stage(s) {sorted(reached)}; move what they share below the stages"


def test_nothing_below_the_stages_imports_a_stage_or_a_workflow():
    above = {"stages", "workflows"}
    for name, path in package_modules().items():
        if name == FACADE or layer(name) in above:
            continue
        imports = imports_of(name, path)
        workflows = {i for i in imports if i.startswith(f"{FACADE}.workflows")}
        assert not stages_reached(imports) and not workflows, f"{name} imports a stage or workflow"


def test_stages_do_not_import_workflows():
    for name in stage_modules():
        assert not any(i.startswith(f"{FACADE}.workflows") for i in imports_of(name, package_modules()[name])), name


def test_core_is_torch_numpy_and_the_standard_library_only():
    # numpy only as torch's own array view: byte-level reads and mask scans that torch has no fast path for
    allowed_roots = set(sys.stdlib_module_names) | {"torch", "numpy", "__future__"}
    for name, path in package_modules().items():
        if layer(name) != "core":
            continue
        for imported_name in imports_of(name, path):
            root = imported_name.split(".")[0]
            inside_core = imported_name.startswith(f"{FACADE}.core")
            assert inside_core or root in allowed_roots, f"{name} imports {imported_name}; core/ is pure tensor maths"


def test_io_uses_only_core_errors_the_launcher_and_the_version():
    allowed = (f"{FACADE}.io", f"{FACADE}.core", f"{FACADE}.errors", f"{FACADE}.launcher")
    for name, path in package_modules().items():
        if layer(name) != "io":
            continue
        ours = {i for i in imports_of(name, path) if i == FACADE or i.startswith(f"{FACADE}.")}
        strays = {i for i in ours if i not in (FACADE, f"{FACADE}.__version__") and not i.startswith(allowed)}
        assert not strays, f"{name} imports {sorted(strays)}; io/ sits below data, models and the stages"


def test_the_launcher_is_a_leaf_that_io_may_use():
    path = package_modules()[f"{FACADE}.launcher"]
    ours = {i for i in imports_of(f"{FACADE}.launcher", path) if i.startswith(f"{FACADE}.")}
    assert all(i.startswith(f"{FACADE}.errors") for i in ours), f"launcher imports {sorted(ours)}; it must stay a leaf below io/"


def test_no_file_of_the_package_is_over_400_lines():
    too_long = {}
    for path in sorted(PACKAGE.rglob("*")):
        relative = path.relative_to(PACKAGE).as_posix()
        if path.suffix not in (".py", ".j2"):
            continue
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_LINES:
            too_long[relative] = lines
    assert not too_long, f"split these files, one concern each: {too_long}"
