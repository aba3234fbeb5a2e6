"""The package's layers: every import arrow points down.

    __main__, cli                             the command line (and each package's `command` module)
    demo                                      the whole product on one machine
    streaming                                 the consumer runtime (the worker)
    camera, console                           the line simulator (a producer); the web console
    inference, alerts, reports, infra         the one inference path; rules and outbox; analysts'
                                              reports; local broker and database
    model                                     network, training, the model artefact
    storage, datasets, evaluation             the defect database; tile sets; metrics
    core                                      records, contracts, catalogue, tiling, errors

A module may import its own package and any package in a lower layer, never one at its level or
above. A package's `command.py` (or `*_command.py`) is its command-line entry point: it sits with
`cli` at the top and may import anything below. The check reads the source with `ast`, so an
import inside a function counts as much as one at the top of a file.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import worker

PACKAGE_ROOT = Path(worker.__file__).parent

LAYERS: tuple[frozenset[str], ...] = (  # bottom first
    frozenset({"core"}),
    frozenset({"storage", "datasets", "evaluation"}),
    frozenset({"model"}),
    frozenset({"inference", "alerts", "reports", "infra"}),
    frozenset({"camera", "console"}),
    frozenset({"streaming"}),
    frozenset({"demo"}),
    frozenset({"cli"}),
    frozenset({"__main__"}),
)
LEVEL = {name: level for level, names in enumerate(LAYERS) for name in names}
TOP = len(LAYERS) - 1


def _modules() -> list[Path]:
    return sorted(
        p for p in PACKAGE_ROOT.rglob("*.py") if "migrations" not in p.relative_to(PACKAGE_ROOT).parts
    )


def _package_of(path: Path) -> str:
    """`worker.<package>` for a module of a package; the module's own name at the top level."""
    return path.relative_to(PACKAGE_ROOT).with_suffix("").parts[0]


def _is_entry_point(path: Path) -> bool:
    return path.stem == "command" or path.stem.endswith("_command")


def _imported_packages(path: Path) -> set[tuple[str, int]]:
    """(first-level package of `worker`, line) for every import of the project in the file."""
    module_parts = list(path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts)
    if module_parts[-1] == "__init__":
        module_parts.pop()
    found: set[tuple[str, int]] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module_parts[: len(module_parts) - node.level + (path.stem == "__init__")]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            names = [target, *(f"{target}.{alias.name}" for alias in node.names)]
        for name in names:
            parts = name.split(".")
            if parts[0] == "worker" and len(parts) > 1 and parts[1] != "__version__":
                found.add((parts[1], node.lineno))
    return found


def test_every_package_and_top_level_module_has_a_layer() -> None:
    children = {p.stem if p.is_file() else p.name for p in PACKAGE_ROOT.iterdir()}
    children = {c for c in children if not c.startswith(("_", ".")) or c == "__main__"} - {"__init__"}
    children -= {"schemas", "migrations", "config"}  # data shipped in the package, not code
    assert children == set(LEVEL), f"give every package a layer in LAYERS; packages: {sorted(children)}"


def test_every_import_points_down() -> None:
    violations = []
    for path in _modules():
        own = _package_of(path)
        level = TOP if _is_entry_point(path) else LEVEL.get(own, 0)  # worker/__init__.py: the bottom
        for imported, line in sorted(_imported_packages(path)):
            if imported == own:
                continue
            if imported not in LEVEL:
                violations.append(
                    f"{path.relative_to(PACKAGE_ROOT)}:{line} imports unknown worker.{imported}"
                )
            elif LEVEL[imported] >= level:
                violations.append(
                    f"{path.relative_to(PACKAGE_ROOT)}:{line} ({own}, layer {level}) imports "
                    f"worker.{imported} (layer {LEVEL[imported]}): arrows must point down"
                )
    assert not violations, "\n".join(violations)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import worker.streaming.loop", {"streaming"}),
        ("from worker.core import records", {"core"}),
        ("from worker import cli", {"cli"}),
        ("def f():\n    from worker.demo.run import run_demo", {"demo"}),
        ("from . import rules", {"alerts"}),
        ("from ..storage import tables", {"storage"}),
        ("import json\nfrom sqlalchemy import text", set()),
    ],
)
def test_the_check_sees_absolute_relative_and_nested_imports(
    source: str, expected: set[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_root = tmp_path / "worker"
    (fake_root / "alerts").mkdir(parents=True)
    module = fake_root / "alerts" / "engine.py"
    module.write_text(source)
    monkeypatch.setattr(__import__(__name__), "PACKAGE_ROOT", fake_root)
    assert {name for name, _ in _imported_packages(module)} == expected


def test_the_check_fails_on_an_upward_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_root = tmp_path / "worker"
    (fake_root / "storage").mkdir(parents=True)
    (fake_root / "storage" / "writer.py").write_text("from worker.streaming.loop import Worker\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE_ROOT", fake_root)
    with pytest.raises(
        AssertionError, match=r"storage/writer.py:1 \(storage, layer 1\) imports worker.streaming"
    ):
        test_every_import_points_down()


def _public_modules(package: str, root: Path) -> set[str] | None:
    """The names in `worker/<package>/__init__.py`'s `__all__` (read, not imported); None for a
    top-level module or a package without `__all__`."""
    init = root / package / "__init__.py"
    if not init.is_file():
        return None
    for node in ast.parse(init.read_text()).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            return {elt.value for elt in node.value.elts if isinstance(elt, ast.Constant)}  # type: ignore[attr-defined]
    return None


def _cross_package_uses(path: Path, own: str | None) -> list[tuple[str, str, int]]:
    """(package, module or name, line) of each `worker.<package>.<module>` this file imports from
    outside `own`."""
    uses = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[list[str]] = []
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            parts = node.module.split(".")
            targets = [parts] if len(parts) > 2 else [[*parts, alias.name] for alias in node.names]
        elif isinstance(node, ast.Import):
            targets = [alias.name.split(".") for alias in node.names]
        for parts in targets:
            if parts[0] == "worker" and len(parts) > 2 and parts[1] != own:
                uses.append((parts[1], parts[2], node.lineno))
    return uses


def test_other_packages_and_tools_use_only_a_package_s_public_modules() -> None:
    """A package's `__init__` names in `__all__` the modules others may import; the rest are its
    own. Checked over the package, bench/ and scripts/ (tests may reach inside what they test)."""
    repo = PACKAGE_ROOT.parent
    files = [(p, _package_of(p)) for p in _modules()]
    files += [(p, None) for folder in ("bench", "scripts") for p in sorted((repo / folder).glob("*.py"))]
    violations = []
    for path, own in files:
        for package, name, line in _cross_package_uses(path, own):
            public = _public_modules(package, PACKAGE_ROOT)
            if public is None:
                continue
            if name not in public:
                violations.append(
                    f"{path.relative_to(repo)}:{line} imports worker.{package}.{name}, which "
                    f"worker/{package}/__init__.py does not list in __all__ {sorted(public)}"
                )
    assert not violations, "\n".join(violations)


def test_every_package_names_its_public_modules_and_they_exist() -> None:
    for package in sorted(p.name for p in PACKAGE_ROOT.iterdir() if (p / "__init__.py").is_file()):
        public = _public_modules(package, PACKAGE_ROOT)
        assert public, f"worker/{package}/__init__.py: expected __all__ naming its public modules"
        missing = {m for m in public if not (PACKAGE_ROOT / package / f"{m}.py").is_file()}
        assert not missing, f"worker/{package}: __all__ names modules that do not exist: {sorted(missing)}"
