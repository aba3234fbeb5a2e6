"""The demo's console: `steel-worker console` over the demo's database, with a login and a user made
for the occasion, served on this machine until Ctrl-C.

`start_console` makes a `steel_console` database login (as at a plant; the owner's URL when its
user may not create roles) and a console user `demo` with the admin role and a fresh random
password, then serves the console in a background thread on 127.0.0.1 (plain HTTP: the session
cookie is not marked Secure, which only suits a local trial). `serve_until_interrupted` keeps it up
until Ctrl-C (or until the server stops), then stops it.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from worker.core.errors import ConfigError, InfrastructureError

DEMO_CONSOLE_LOGIN = "steel_demo_console"
DEMO_USER = "demo"
START_TIMEOUT_S = 15.0


@dataclass
class RunningConsole:
    url: str
    user: str
    password: str
    server: object  # uvicorn.Server
    thread: threading.Thread
    engine: sa.Engine

    def stop(self) -> None:
        self.server.should_exit = True  # type: ignore[attr-defined]
        self.thread.join(10)
        self.engine.dispose()


def _console_url(db_url: str) -> str:
    from sqlalchemy.engine import make_url  # noqa: PLC0415

    from worker.storage.roles import create_login  # noqa: PLC0415

    password = secrets.token_urlsafe(18)
    try:
        create_login(db_url, DEMO_CONSOLE_LOGIN, "console", password)
    except ConfigError:
        return db_url
    return (
        make_url(db_url)
        .set(username=DEMO_CONSOLE_LOGIN, password=password)
        .render_as_string(hide_password=False)
    )


def start_console(
    db_url: str, port: int = 8080, host: str = "127.0.0.1", models_dir: Path | None = None
) -> RunningConsole:
    """Serve the console over the database at `db_url` on `host`:`port` (another free port when
    that one is taken; 0: any free port), its heat maps drawn with the artefacts in `models_dir`.
    InfrastructureError when it does not start in time."""
    import uvicorn  # noqa: PLC0415

    from worker.console.app import create_app  # noqa: PLC0415
    from worker.console.explainer import Explainer  # noqa: PLC0415
    from worker.console.users import set_user  # noqa: PLC0415
    from worker.storage.engine import create_engine  # noqa: PLC0415

    engine = create_engine(_console_url(db_url))
    password = secrets.token_urlsafe(12)
    set_user(engine, DEMO_USER, "admin", password)
    app = create_app(engine, secrets.token_hex(32), secure_cookies=False, explainer=Explainer(models_dir))
    for candidate in (port, 0) if port else (0,):
        server = uvicorn.Server(
            uvicorn.Config(app, host=host, port=candidate, log_level="error", access_log=False)
        )
        thread = threading.Thread(target=_serve, args=(server,), name="console", daemon=True)
        thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        if server.started:
            bound = server.servers[0].sockets[0].getsockname()[1]
            return RunningConsole(f"http://{host}:{bound}/", DEMO_USER, password, server, thread, engine)
        server.should_exit = True
        thread.join(5)
    engine.dispose()
    raise InfrastructureError(f"the console did not start on {host} within {START_TIMEOUT_S:g} s")


def _serve(server: object) -> None:
    """uvicorn's `run`, quietly ending the thread where uvicorn exits the process (a port taken):
    `start_console` then tries another port."""
    try:
        server.run()  # type: ignore[attr-defined]
    except SystemExit:
        return


def serve_until_interrupted(console: RunningConsole, say: Callable[[str], None]) -> None:
    """Block until Ctrl-C (SIGINT), SIGTERM or until the server stops; then stop it."""
    try:
        while console.thread.is_alive():
            console.thread.join(0.5)
    except KeyboardInterrupt:  # SIGINT; the demo command turns SIGTERM into it too
        say("console: stopping")
    finally:
        console.stop()
