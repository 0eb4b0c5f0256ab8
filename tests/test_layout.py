"""The package's layout holds: dependencies point one way (tools → labs → core), and every lab keeps its
checkers in exactly one ``checks.py``.

The core is ``labutils/__init__.py`` and the flat modules that are neither tools nor ``start_here``; every
subpackage of ``labutils`` is a lab (found by directory, so a new lab is covered the day it lands).
"""

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "labutils"
TOOLS = {"__main__", "doctor", "warmup", "authoring"}
NOTEBOOK_HELPERS = {"start_here"}  # notebook 00's checkers: may import the core, nothing imports it
LABS = sorted(p.name for p in PKG.iterdir() if p.is_dir() and (p / "__init__.py").exists())
CORE = sorted({"__init__"} | {p.stem for p in PKG.glob("*.py")} - TOOLS - NOTEBOOK_HELPERS)


def _module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> set[str]:
    """Every labutils module a file imports, anywhere in it (top level or inside a function), as a full name."""
    here = _module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this file's package
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names}  # `from labutils import doctor` imports a module
    return {m for m in out if m == "labutils" or m.startswith("labutils.")}


def _kind(module: str) -> tuple[str, str]:
    """('core' | 'lab' | 'tool' | 'helper' | 'other', the lab's name) of a full module name."""
    parts = module.split(".")
    if len(parts) == 1:
        return "core", ""
    top = parts[1]
    if top in LABS:
        return "lab", top
    if top in TOOLS:
        return "tool", ""
    if top in NOTEBOOK_HELPERS:
        return "helper", ""
    if top in CORE:
        return "core", ""
    return "other", ""  # a name imported from the core package (e.g. `from labutils import set_seed`)


def _files(where: Path):
    return sorted(where.rglob("*.py"))


def test_layout_is_what_the_test_expects():
    assert {"scaling", "distill", "kernels", "moe"} <= set(LABS)
    assert {"data", "model", "train", "checks", "plotting", "hardware", "__init__"} <= set(CORE)


@pytest.mark.parametrize("name", CORE)
def test_core_imports_no_lab_and_no_tool(name):
    path = PKG / ("__init__.py" if name == "__init__" else f"{name}.py")
    bad = sorted(m for m in imported(path) if _kind(m)[0] in ("lab", "tool", "helper"))
    assert not bad, f"labutils/{path.name} is core: it may import only the core, but imports {bad}"


@pytest.mark.parametrize("lab", LABS)
def test_lab_imports_the_core_and_itself_only(lab):
    problems = []
    for path in _files(PKG / lab):
        for m in sorted(imported(path)):
            kind, other = _kind(m)
            if kind in ("tool", "helper") or (kind == "lab" and other != lab):
                problems.append(f"{path.relative_to(PKG.parent)} imports {m}")
    assert not problems, "a lab imports the core and its own modules only (move a shared need into the core):\n" + \
        "\n".join(problems)


@pytest.mark.parametrize("lab", LABS)
def test_each_lab_has_one_checks_module_holding_every_checker(lab):
    checks = [p for p in _files(PKG / lab) if p.name == "checks.py"]
    assert [p.relative_to(PKG / lab) for p in checks] == [Path("checks.py")], \
        f"labutils/{lab} needs exactly one checks.py, at its top, found {checks}"
    stray = [f"{p.relative_to(PKG.parent)}: {node.name}" for p in _files(PKG / lab) if p.name != "checks.py"
             for node in ast.walk(ast.parse(p.read_text())) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
             and node.name.startswith("check_")]
    assert not stray, "checkers belong in the lab's checks.py, not beside the reference code:\n" + "\n".join(stray)


def test_the_import_walker_sees_what_it_must():
    """The walker itself: function-level, relative and `from labutils import <module>` imports all count."""
    import tempfile

    src = ("from labutils import doctor\nfrom . import law\n"
           "def f():\n    import labutils.moe.layer\n    from labutils.kernels import checks\n")
    with tempfile.TemporaryDirectory(dir=PKG) as tmp:  # inside the package, so the relative import resolves
        path = Path(tmp) / "probe.py"
        path.write_text(src)
        got = imported(path)
    pkg = f"labutils.{Path(tmp).name}"
    assert {"labutils.doctor", f"{pkg}.law", "labutils.moe.layer", "labutils.kernels.checks"} <= got
