"""docs/reliability.md names, for each fault, the test that proves what the worker does: every test
it names exists (a renamed or deleted test makes the page lie), and every test file it names is
there. A name written `::test_x` belongs to the last file named before it on the same line, or on
the lines before."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "reliability.md"
REFERENCE = re.compile(r"(tests/[\w/]+\.py)?::(test_\w+)|(tests/[\w/]+\.py)")


def _references() -> list[tuple[str, str | None]]:
    """(file, test or None) for each reference on the page, in order."""
    found: list[tuple[str, str | None]] = []
    current: str | None = None
    for match in REFERENCE.finditer(PAGE.read_text(encoding="utf-8")):
        if match.group(3):
            current = match.group(3)
            found.append((current, None))
            continue
        current = match.group(1) or current
        assert current is not None, f"::{match.group(2)} names no file before it"
        found.append((current, match.group(2)))
    return found


def _tests(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}


def test_every_test_the_reliability_page_names_exists() -> None:
    references = _references()
    assert len(references) > 50, "the page names the tests that prove its guarantees"
    missing = []
    for file, test in references:
        path = REPO / file
        if not path.is_file():
            missing.append(file)
        elif test is not None and test not in _tests(path):
            missing.append(f"{file}::{test}")
    assert not missing, f"docs/reliability.md names tests that do not exist: {sorted(set(missing))}"
