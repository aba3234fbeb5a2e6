"""`steel-worker console serve` as a real process, as the plant runs it: a `steel_console` login made
by `steel-worker db create-login`, the console user made by `console add-user`, uvicorn on
127.0.0.1, spoken to over sockets (no TestClient, which frames bodies itself). Then what a hostile
client can do to it: chunked bodies of many megabytes (refused at the cap, memory flat) and a flood
of wrong passwords (throttled without hashing while pages keep answering).

Every load here is on the loopback address, bounded in count and in time."""

from __future__ import annotations

import http.client
import os
import re
import secrets
import select
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from worker.storage.engine import create_engine

SECRET = "a-test-secret-key-that-is-long-enough-0123456789"
PASSWORD = "correct horse battery"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')
START_S = 30.0


def _cli(*args: str, env: dict[str, str], timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    """`steel-worker ARGS` in a process of its own (this checkout's code)."""
    return subprocess.run(
        [sys.executable, "-m", "worker", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


@pytest.fixture
def console_url(database_url: str, postgres_server_url: str) -> Iterator[str]:
    """`database_url` as a `steel_console` login made the documented way (docs/console.md): `db
    create-login` as the owner, then `console add-user` as that login; the role is dropped after."""
    name = f"steel_test_console_{uuid.uuid4().hex[:10]}"
    password = secrets.token_urlsafe(18)
    made = _cli(
        "db", "create-login", name, "--role", "console", "--password-env", "CONSOLE_DB_PASSWORD",
        env={"DATABASE_URL": database_url, "CONSOLE_DB_PASSWORD": password},
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    url = make_url(database_url).set(username=name, password=password).render_as_string(hide_password=False)
    try:
        added = _cli(
            "console", "add-user", "viewer", "--role", "viewer", "--password-env", "VIEWER_PASSWORD",
            env={"DATABASE_URL": url, "VIEWER_PASSWORD": PASSWORD},
        )  # fmt: skip
        assert added.returncode == 0, added.stderr
        yield url
    finally:
        engine = create_engine(postgres_server_url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.execute(sa.text(f'DROP ROLE IF EXISTS "{name}"'))
        finally:
            engine.dispose()


@contextmanager
def _served(url: str, port: int, tmp_path: Path, *options: str) -> Iterator[subprocess.Popen[bytes]]:
    """`console serve` on 127.0.0.1:`port` as the login of `url`, until the block ends (SIGTERM)."""
    log = tmp_path / f"console-{port}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "worker", "console", "serve", "--host", "127.0.0.1", "--port", str(port),
             "--insecure-cookies", *options],
            env={**os.environ, "DATABASE_URL": url, "CONSOLE_SECRET_KEY": SECRET},
            stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + START_S
        while True:
            assert process.poll() is None, f"console serve exited: {log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"console serve did not answer: {log.read_text()[-3000:]}"
            try:
                if _request(port, "GET", "/healthz")[0] == 200:
                    break
            except OSError:
                time.sleep(0.2)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def _request(
    port: int, method: str, path: str, body: dict[str, str] | None = None, cookie: str | None = None
) -> tuple[int, str, dict[str, str]]:
    """(status, text, headers) of one request on a connection of its own."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        headers = {"Cookie": cookie} if cookie else {}
        data = None
        if body is not None:
            data = urllib.parse.urlencode(body)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        connection.request(method, path, body=data, headers=headers)
        response = connection.getresponse()
        return response.status, response.read().decode(), dict(response.getheaders())
    finally:
        connection.close()


class Browser:
    """A cookie jar of one (the console's one cookie) over `_request`."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cookie: str | None = None

    def call(self, method: str, path: str, body: dict[str, str] | None = None) -> tuple[int, str]:
        status, text, headers = _request(self.port, method, path, body, self.cookie)
        if "set-cookie" in {k.lower() for k in headers}:
            value = next(v for k, v in headers.items() if k.lower() == "set-cookie")
            self.cookie = value.split(";", 1)[0]
        return status, text

    def login(self, name: str, password: str) -> int:
        match = CSRF.search(self.call("GET", "/login")[1])
        assert match
        return self.call(
            "POST", "/login", {"csrf": match[1], "name": name, "password": password, "next": "/"}
        )[0]


def test_console_serve_runs_as_a_steel_console_login_made_by_create_login(
    console_url: str, free_tcp_port: int, tmp_path: Path
) -> None:
    """The least-privilege login of docs/console.md starts the console (the schema check reads
    alembic_version), logs a user in, and serves the line view."""
    with _served(console_url, free_tcp_port, tmp_path):
        browser = Browser(free_tcp_port)
        assert browser.login("viewer", PASSWORD) == 303
        status, page = browser.call("GET", "/")
        assert status == 200 and "<h1>Line</h1>" in page and "viewer (viewer)" in page


def _chunked_form(port: int, megabytes: int, deadline: float) -> tuple[bytes, int]:
    """POST /login a chunked form of `megabytes` MiB in fields of 960 KiB (under the 1 MiB a field
    that Starlette's parser allows: the shape that took main to 1.45 GiB), 64 KiB a chunk,
    stopping as soon as an answer arrives; (the answer's first bytes, bytes sent)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        sent = 0
        while sent < megabytes << 20 and time.monotonic() < deadline:
            if select.select([sock], [], [], 0)[0]:
                break  # answered
            piece = b"&a=" + b"b" * (64 * 1024 - 3) if sent % (15 << 16) == 0 else b"b" * (64 * 1024)
            try:
                sock.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
            except OSError:
                break
            sent += len(piece)
        try:
            return sock.recv(64), sent
        except OSError:
            return b"", sent


def test_chunked_forms_of_many_megabytes_are_refused_at_the_cap_and_memory_stays_flat(
    console_url: str, free_tcp_port: int, tmp_path: Path
) -> None:
    """Eight concurrent chunked POSTs of 96 MiB each (no Content-Length to check): each answered 413
    after the cap, long before its end, and the process grows by less than 40 MiB (main: +790 MiB)."""
    with _served(console_url, free_tcp_port, tmp_path) as process:
        server = psutil.Process(process.pid)
        assert _chunked_form(free_tcp_port, 1, time.monotonic() + 10)[0].startswith(b"HTTP/1.1 413")  # warm
        before = server.memory_info().rss
        results: list[tuple[bytes, int]] = []
        deadline = time.monotonic() + 60
        senders = [
            threading.Thread(target=lambda: results.append(_chunked_form(free_tcp_port, 96, deadline)))
            for _ in range(8)
        ]
        peak = before
        for sender in senders:
            sender.start()
        while any(s.is_alive() for s in senders) and time.monotonic() < deadline + 5:
            peak = max(peak, server.memory_info().rss)
            time.sleep(0.02)
        for sender in senders:
            sender.join(5)
        peak = max(peak, server.memory_info().rss)
    assert [answer[:12] for answer, _ in results] == [b"HTTP/1.1 413"] * 8, results
    assert max(sent for _, sent in results) < 32 << 20  # the server stopped reading: no 96 MiB went in
    grown = (peak - before) / 2**20
    sent = sorted(f"{n / 2**20:.1f}" for _, n in results)
    print(
        f"RSS {before / 2**20:.0f} MiB before, peak {peak / 2**20:.0f} MiB (+{grown:.1f}); MiB sent: {sent}"
    )
    assert grown < 40, f"RSS grew by {grown:.0f} MiB"


def test_pages_keep_answering_while_a_flood_of_wrong_passwords_is_throttled(
    console_url: str, free_tcp_port: int, tmp_path: Path
) -> None:
    """Sixteen clients send wrong passwords for ten names as fast as they can (at most 4 s, 640
    requests): beyond 10 failures from the address every login answers 429 at once, with no hashing,
    and a logged-in viewer's line view keeps answering within 1 s (main: every login hashed, on the
    pages' thread pool, holding a database connection)."""
    options = ("--login-failures-per-name", "3", "--login-failures-per-address", "10", "--login-window", "60")
    with _served(console_url, free_tcp_port, tmp_path, *options):
        viewer = Browser(free_tcp_port)
        assert viewer.login("viewer", PASSWORD) == 303
        stop = time.monotonic() + 4.0
        answers: list[tuple[int, float]] = []
        pages: list[float] = []

        def flood(worker: int) -> None:
            attacker = Browser(free_tcp_port)
            token = CSRF.search(attacker.call("GET", "/login")[1])
            assert token
            for n in range(40):
                if time.monotonic() > stop:
                    return
                started = time.monotonic()
                status = attacker.call(
                    "POST",
                    "/login",
                    {"csrf": token[1], "name": f"user{(n + worker) % 10}", "password": "guess"},
                )[0]
                answers.append((status, time.monotonic() - started))

        def watch() -> None:
            while time.monotonic() < stop:
                started = time.monotonic()
                status, page = viewer.call("GET", "/")
                assert status == 200 and "<h1>Line</h1>" in page
                pages.append(time.monotonic() - started)
                time.sleep(0.1)

        threads = [threading.Thread(target=flood, args=(w,)) for w in range(16)] + [
            threading.Thread(target=watch)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(20)
    statuses = [status for status, _ in answers]
    throttled = sorted(seconds for status, seconds in answers if status == 429)
    print(
        f"{len(answers)} logins: {statuses.count(401)} checked (401), {len(throttled)} throttled (429),"
        f" {statuses.count(503)} busy (503); 429 median {1000 * throttled[len(throttled) // 2]:.1f} ms;"
        f" {len(pages)} pages, slowest {1000 * max(pages):.0f} ms"
    )
    assert set(statuses) <= {401, 429, 503} and statuses.count(401) <= 10
    assert len(throttled) >= 50
    assert throttled[len(throttled) // 2] < 0.1  # answered at once: no 0.2 s Argon2id check behind it
    assert len(pages) >= 10 and max(pages) < 1.0
