"""compose.yaml, Dockerfile and .dockerignore: valid against the Compose Specification (with the
shared checker, when present), and our own rules that need no Docker engine: the worker waits for
healthy or completed dependencies, required settings fail fast with `:?`, the worker's variables are
settings it knows, the image carries what the code reads from the project folder."""

from __future__ import annotations

import fnmatch
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from worker.streaming.settings import OPTIONS, REQUIRED

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "compose.yaml"
#: `${VAR}`, `${VAR:-default}`, `${VAR:?message}` (and the forms without colon); `$${...}` is escaped.
INTERPOLATION = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")
REQUIRED_VARIABLES = {"POSTGRES_PASSWORD", "WORKER_DB_PASSWORD", "MODEL_DIR"}


def _checker() -> Path:
    shared = Path(os.environ.get("STEEL_SHARED_DIR", ROOT.parent / "shared"))
    return shared / "tools" / "check_compose.py"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def test_compose_file_validates_against_the_compose_specification() -> None:
    """The shared checker (Compose Specification JSON schema) accepts compose.yaml."""
    checker = _checker()
    if not checker.is_file():
        pytest.skip(f"no {checker} (set STEEL_SHARED_DIR to the shared folder)")
    env = {
        **os.environ,
        "POSTGRES_PASSWORD": "test-password",
        "WORKER_DB_PASSWORD": "test-worker-password",
        "MODEL_DIR": "/srv/models/test",
    }
    result = subprocess.run(
        [sys.executable, str(checker), str(COMPOSE)],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 schema errors" in result.stdout
    assert "services: kafka, topics, postgres, migrate, worker, simulator" in result.stdout


def test_worker_waits_for_healthy_services_and_completed_one_shots(compose: dict[str, Any]) -> None:
    """Every dependency of the worker is either a long-running service with a healthcheck that it
    waits to be healthy, or a one-shot job (restart "no") that must have completed successfully."""
    services = compose["services"]
    depends = services["worker"]["depends_on"]
    assert {name: spec["condition"] for name, spec in depends.items()} == {
        "kafka": "service_healthy",
        "postgres": "service_healthy",
        "migrate": "service_completed_successfully",
        "topics": "service_completed_successfully",
    }
    for name, spec in depends.items():
        service = services[name]
        if spec["condition"] == "service_healthy":
            test = service["healthcheck"]["test"]
            assert test and test[0] in ("CMD", "CMD-SHELL"), name
        else:
            assert service["restart"] == "no", name
            assert "healthcheck" not in service, name
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert _migrate_steps(services["migrate"])[0].startswith("steel-worker db upgrade --wait ")
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def _migrate_steps(migrate: dict[str, Any]) -> list[str]:
    """The commands of the migrate service's shell script, one per line (after `set -e`)."""
    assert migrate["entrypoint"] == ["/bin/sh", "-c"]
    (script,) = migrate["command"]
    lines = [line.strip() for line in script.splitlines() if line.strip()]
    assert lines[0] == "set -e", "a failed migration must not go on to the login"
    return lines[1:]


def test_the_worker_connects_as_its_own_login_which_migrate_makes_after_the_schema(
    compose: dict[str, Any],
) -> None:
    """The worker's DATABASE_URL names the workers' login (a member of steel_worker), never the
    owner POSTGRES_USER/POSTGRES_PASSWORD; `migrate` upgrades the schema as the owner and then makes
    that login with `db create-login`, its password read from the environment (never an argument)."""
    services = compose["services"]
    worker_url = services["worker"]["environment"]["DATABASE_URL"]
    assert "POSTGRES_USER" not in worker_url and "POSTGRES_PASSWORD" not in worker_url
    credentials = re.match(r"postgresql\+psycopg2://(\$\{[^}]*\}):(\$\{[^}]*\})@postgres:5432/", worker_url)
    assert credentials, worker_url
    user, password = credentials.groups()
    assert user == "${WORKER_DB_USER:-steel_worker_app}"
    assert password.startswith("${WORKER_DB_PASSWORD:?")
    migrate = services["migrate"]
    environment = migrate["environment"]
    assert "${POSTGRES_USER:-steel}:${POSTGRES_PASSWORD:?" in environment["DATABASE_URL"]
    assert environment["WORKER_DB_USER"] == user
    assert environment["WORKER_DB_PASSWORD"].startswith("${WORKER_DB_PASSWORD:?set WORKER_DB_PASSWORD")
    upgrade, login = _migrate_steps(migrate)
    assert upgrade == "steel-worker db upgrade --wait 60"
    assert login == (
        'steel-worker db create-login "$$WORKER_DB_USER" --role worker --password-env WORKER_DB_PASSWORD'
    )


def test_required_settings_fail_fast_and_nothing_interpolates_to_empty() -> None:
    """Every `${VAR}` has a default (`:-`) or is required (`:?` with a message); the required ones
    are exactly the two passwords and the model folder, and never get a default elsewhere."""
    text = COMPOSE.read_text(encoding="utf-8")
    found = INTERPOLATION.findall(text)
    assert found
    bare = sorted({name for name, op, _ in found if op not in (":-", ":?")})
    assert not bare, f"variables that would silently become empty: {bare}"
    required = {name for name, op, _ in found if op == ":?"}
    assert required == REQUIRED_VARIABLES
    for name, op, message in found:
        if name in REQUIRED_VARIABLES:
            assert op == ":?" and message.strip().startswith(f"set {name}"), (name, op, message)


def test_worker_environment_names_only_settings_the_worker_knows(compose: dict[str, Any]) -> None:
    """The worker gets every required setting, and no variable that the settings table lacks (a
    typo would be ignored silently); /healthz on METRICS_PORT is its healthcheck; one GPU each."""
    worker = compose["services"]["worker"]
    environment = worker["environment"]
    known = {o.env for o in OPTIONS} | {"TF_FORCE_GPU_ALLOW_GROWTH"}
    assert not sorted(set(environment) - known)
    assert {o.env for o in OPTIONS if o.default is REQUIRED} <= set(environment)
    assert environment["MODEL_PATH"] == "/model"
    assert environment["ALERT_RULES"] is None  # from the shell when set; else the package's own rules
    assert any(v["target"] == "/model" and v["read_only"] for v in worker["volumes"])
    assert "/healthz" in " ".join(worker["healthcheck"]["test"])
    assert "METRICS_PORT" in " ".join(worker["healthcheck"]["test"])
    device = worker["deploy"]["resources"]["reservations"]["devices"][0]
    assert (device["driver"], device["count"], device["capabilities"]) == ("nvidia", 1, ["gpu"])
    assert worker["deploy"]["replicas"] == "${WORKER_REPLICAS:-1}"
    assert worker["command"] == ["run"]


def test_simulator_only_runs_in_its_profile(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["simulator"]["profiles"] == ["simulator"]
    assert services["simulator"]["command"][0] == "simulate"
    assert all("profiles" not in s for n, s in services.items() if n != "simulator")


def _ignored(path: str, patterns: list[str]) -> bool:
    return any(
        fnmatch.fnmatch(path, p) or fnmatch.fnmatch(path.split("/", maxsplit=1)[0], p) for p in patterns
    )


def test_image_carries_the_project_files_the_code_reads_and_no_local_state() -> None:
    """The image installs the wheel built from the project (which carries schemas/, migrations/
    and config/ inside the package), never the source tree on PYTHONPATH; .dockerignore keeps the
    files the build needs and leaves out virtual environments, runs, caches and secrets."""
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11-slim AS wheel$", dockerfile, re.MULTILINE)
    assert "pip wheel --no-cache-dir --no-deps -w /wheels /src" in dockerfile
    assert (
        "COPY --from=wheel /wheels /wheels" in dockerfile
        and "pip install /wheels/steel_worker-*.whl" in dockerfile
    )
    assert "PYTHONPATH=" not in dockerfile
    assert 'ENTRYPOINT ["steel-worker"]' in dockerfile
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    needed_files = (
        "worker/cli.py", "schemas/frame-meta.v1.json", "migrations/env.py", "alembic.ini",
        "pyproject.toml", "worker/core/catalogues/paper.json", "config/alert-rules.yaml",
    )  # fmt: skip
    for needed in needed_files:
        assert not _ignored(needed, patterns), needed
    for unwanted in (".venv/bin/python", ".env", "runs/demo/model.keras", ".git/HEAD", ".cache/x"):
        assert _ignored(unwanted, patterns), unwanted
