"""The library's layout: packages follow the data's path and imports run one way.

Entry points (``stages/``, ``asrflow.cli``) and the pipeline package sit on top and may use
any library package; library packages import only the packages below them (``ALLOWED``) and
never the pipeline, an entry point or a package above them. So models know no trainer,
decoder or tracker, and scoring knows no decoder. Every import counts, lazy ones inside
functions and ``TYPE_CHECKING`` ones included.
"""

import ast
from pathlib import Path

import pytest

from conftest import REPO

SRC = REPO / "src" / "asrflow"
LIBRARY = ("common", "text", "scoring", "features", "data", "models", "train", "decode", "evaluate", "serve")
# package -> the library packages it may import (besides itself)
ALLOWED = {
    "common": set(),
    "text": {"common"},
    "scoring": {"common"},
    "features": {"common"},
    "data": {"common", "text", "features"},
    "models": {"common", "features"},
    "train": {"common", "text", "scoring", "features", "data", "models"},
    "decode": {"common", "text", "scoring", "features", "data", "models"},
    "evaluate": {"common", "text", "scoring", "features", "data", "models", "decode"},
    "serve": {"common", "text", "features", "data", "models", "decode"},
}


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports (absolute names), anywhere in the file."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import; asrflow uses absolute imports"
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


def package_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "asrflow" and len(parts) > 1 else None


def test_every_module_is_in_a_known_package():
    top = sorted(p.name for p in SRC.iterdir() if p.suffix == ".py" or (p.is_dir() and p.name != "__pycache__"))
    assert top == sorted(["__init__.py", "cli.py", "pipeline", *LIBRARY]), top
    for pkg in [*LIBRARY, "pipeline"]:
        doc = ast.get_docstring(ast.parse((SRC / pkg / "__init__.py").read_text()))
        assert doc and len(doc.splitlines()) <= 3, f"asrflow.{pkg}: its __init__ says in a line or two what it holds"


@pytest.mark.parametrize("pkg", LIBRARY)
def test_library_imports_run_one_way(pkg):
    bad = []
    for f in sorted((SRC / pkg).rglob("*.py")):
        for mod in imports(f):
            if mod.split(".")[0] == "stages":
                bad.append(f"{f.relative_to(SRC)} imports the entry point {mod}")
            dep = package_of(mod)
            if dep and dep != pkg and dep not in ALLOWED[pkg]:
                bad.append(f"{f.relative_to(SRC)} imports {mod} (asrflow.{pkg} may use only "
                           f"{sorted(ALLOWED[pkg]) or 'nothing else in asrflow'})")
    assert not bad, "\n".join(bad)


def test_allowed_imports_have_no_cycle():
    done: set[str] = set()

    def visit(pkg: str, path: tuple[str, ...]) -> None:
        assert pkg not in path, f"cycle: {' -> '.join(path + (pkg,))}"
        for dep in ALLOWED[pkg]:
            visit(dep, path + (pkg,))
        done.add(pkg)

    for pkg in ALLOWED:
        visit(pkg, ())


def test_the_checker_catches_a_model_importing_the_trainer(tmp_path):
    """The rule is enforced by what the test reads, not by luck: a models/ module that
    imports train/ is reported."""
    f = tmp_path / "bad.py"
    f.write_text("def f():\n    from asrflow.train.loop import train\n")
    deps = {package_of(m) for m in imports(f)} - {None}
    assert deps == {"train"} and "train" not in ALLOWED["models"]


def test_entry_points_are_thin():
    """stages/<name>.py: arguments, the params slice, library calls, outputs and metrics;
    no computation (a generous bound that a stage holding its own algorithm would exceed)."""
    for f in sorted((REPO / "stages").glob("*.py")):
        tree = ast.parse(f.read_text())
        funcs = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
        assert set(funcs) <= {"add_args", "run"} | {n for n in funcs if n.startswith("_")}, (f.name, funcs)
        assert len(f.read_text().splitlines()) <= 70, f"{f.name} holds more than an entry point should"
