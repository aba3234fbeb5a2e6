"""Files the package ships beside its code: the message schemas, the migrations, the alert rules.

They live at the top of the repository (`schemas/`, `migrations/`, `config/`), where people look
for them. The package links each one (`worker/schemas -> ../schemas`, ...), and the wheel carries
them as package data (`pyproject.toml`), so `importlib.resources` finds them the same way in a
checkout, an editable install and an installed wheel; nothing depends on the working directory
or on `PYTHONPATH`.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Final, Literal

from worker.core.errors import ConfigError

ShippedFolder = Literal["schemas", "migrations", "config"]
SHIPPED_FOLDERS: Final[tuple[ShippedFolder, ...]] = ("schemas", "migrations", "config")


def shipped_dir(name: ShippedFolder) -> Path:
    """The folder `name` shipped with the package, as a directory on disk (Alembic and the schema
    loader read files by path). ConfigError when the installation lacks it or is zipped."""
    if name not in SHIPPED_FOLDERS:
        raise ConfigError(f"shipped folder: expected one of {', '.join(SHIPPED_FOLDERS)}, got {name!r}")
    folder = files("worker") / name
    if not isinstance(folder, Path) or not folder.is_dir():
        raise ConfigError(
            f"the steel-worker package has no {name}/ folder at {folder}: install it from a wheel or "
            f"a checkout (pip install .), not from a zip or an sdist without its data"
        )
    return folder
