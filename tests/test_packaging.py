"""The wheel is the product: built from the checkout, installed into a fresh virtual environment
outside it, it finds its schemas, migrations and default alert rules, migrates a real database and
validates frames, with no `PYTHONPATH` and no checkout anywhere near.

The fresh environment borrows the test environment's third-party libraries through a `.pth` line
(installing TensorFlow again would take minutes); the `.pth` files of that environment, among them
the editable install of this checkout, are not run, and the test checks that `worker` is imported
from the new environment.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest
import sqlalchemy as sa

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            str(REPO),
            "-w",
            str(out),
        ],
        check=True,
        cwd=out,
        capture_output=True,
    )
    (built,) = out.glob("steel_worker-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with the wheel installed; returns its bin/ folder."""
    env_dir = tmp_path_factory.mktemp("fresh-env")
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # The libraries of the test environment, as a plain path (its .pth hooks are not executed).
    (Path(site) / "borrowed-libraries.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
        check=True,
        capture_output=True,
    )
    return env_dir / "bin"


def _run(bin_dir: Path, *args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "DATABASE_URL", "VIRTUAL_ENV"}}
    return subprocess.run(
        args, cwd=cwd, env={**clean, "PATH": f"{bin_dir}{os.pathsep}{clean['PATH']}", **env},
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def test_the_wheel_carries_schemas_migrations_rules_and_catalogue(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        *(f"worker/schemas/{p.name}" for p in (REPO / "schemas").glob("*.json")),
        *(f"worker/migrations/versions/{p.name}" for p in (REPO / "migrations" / "versions").glob("*.py")),
        "worker/migrations/env.py",
        "worker/migrations/script.py.mako",
        "worker/config/alert-rules.yaml",
        "worker/core/catalogues/paper.json",
    }
    assert expected <= names, sorted(expected - names)
    assert not [n for n in names if n.startswith(("tests/", "schemas/", "migrations/"))]


def test_the_installed_wheel_imports_from_its_own_environment_and_finds_its_data(
    installed: Path, tmp_path: Path
) -> None:
    probe = (
        "import json, worker\n"
        "from worker.core import contracts, resources\n"
        "from worker.alerts.config import DEFAULT_RULES_PATH, load_rules\n"
        "from worker.core.catalogue import load_catalogue\n"
        "from worker.storage.migrate import MIGRATIONS_DIR\n"
        "print(json.dumps({'package': worker.__file__, 'schemas': str(contracts.SCHEMAS_DIR),\n"
        "  'migrations': str(MIGRATIONS_DIR), 'rules': str(DEFAULT_RULES_PATH),\n"
        "  'checked': list(contracts.check_schemas()),\n"
        "  'rule_count': len(load_rules(catalogue=load_catalogue()).rules)}))\n"
    )
    done = _run(installed, str(installed / "python"), "-c", probe, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    env_root = str(installed.parent)
    for key in ("package", "schemas", "migrations", "rules"):
        assert found[key].startswith(env_root), (key, found[key])
        assert not found[key].startswith(str(REPO)), (key, found[key])
    assert set(found["checked"]) >= {"frame-meta.v1", "detection.v1", "alert.v1", "dead-letter-headers.v1"}
    assert found["rule_count"] > 0


def test_the_installed_command_migrates_a_real_database(
    installed: Path, empty_database_url: str, tmp_path: Path
) -> None:
    done = _run(installed, "steel-worker", "db", "upgrade", cwd=tmp_path, DATABASE_URL=empty_database_url)
    assert done.returncode == 0, done.stderr
    checked = _run(installed, "steel-worker", "db", "check", cwd=tmp_path, DATABASE_URL=empty_database_url)
    assert checked.returncode == 0, checked.stderr
    engine = sa.create_engine(empty_database_url.replace("postgresql://", "postgresql+psycopg2://", 1))
    try:
        with engine.connect() as conn:
            classes = conn.execute(sa.text("SELECT count(*) FROM defect_classes")).scalar_one()
    finally:
        engine.dispose()
    assert classes > 0


def test_the_installed_package_validates_frames_against_its_schemas(installed: Path, tmp_path: Path) -> None:
    probe = (
        "import sys\n"
        "from worker.core import contracts\n"
        "from worker.core.errors import SchemaError\n"
        "good = {'frame_id': 'f-1', 'line': 'L1', 'camera': 'cam-1', 'surface': 'top', 'strip_id': 'S-1',\n"
        "  'captured_at': '2026-11-30T12:00:00Z', 'position_m': 1.5, 'mm_per_px_along': 0.5,\n"
        "  'mm_per_px_across': 0.5, 'edge_offset_mm': 0.0}\n"
        "contracts.validate('frame-meta.v1', good)\n"
        "try:\n"
        "    contracts.validate('frame-meta.v1', {**good, 'position_m': -1})\n"
        "except SchemaError as refused:\n"
        "    print('refused:', refused)\n"
        "else:\n"
        "    sys.exit('a negative position passed the installed schema')\n"
    )
    done = _run(installed, str(installed / "python"), "-c", probe, cwd=tmp_path)
    assert done.returncode == 0, done.stderr + done.stdout
    assert "refused:" in done.stdout and "position_m" in done.stdout
