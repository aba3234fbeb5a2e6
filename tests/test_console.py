"""The web console over HTTP (Starlette's TestClient), against a real database as a `steel_console`
login: logins, roles, CSRF, every page, reviews and acknowledgements, and bad input answered with
4xx and a message, never a 500."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlencode

import numpy as np
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import make_url
from starlette.testclient import TestClient

from worker.console.app import create_app
from worker.console.queries import read_only, wilson_interval
from worker.console.users import set_user
from worker.core.catalogue import load_catalogue
from worker.core.evidence import EvidencePolicy, decode
from worker.core.records import Detection, FrameMeta, FrameResult, KafkaCoordinates, TileRef
from worker.core.thresholds import ClassThresholds
from worker.storage.engine import create_engine
from worker.storage.roles import create_login
from worker.storage.writer import StorageWriter

SECRET = "a-test-secret-key-that-is-long-enough-0123456789"
PASSWORD = "correct horse battery"
MODEL = "c" * 64
T0 = datetime(2026, 11, 30, 6, 0, tzinfo=UTC)
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def _frame(n: int, found: list[tuple[int, str, float]]) -> FrameResult:
    frame_id = f"S-1-f{n:03d}"
    meta = FrameMeta(
        frame_id, "L1", "cam-top-1", "top", "S-1", T0 + timedelta(seconds=n), n * 0.4, 0.25, 0.25, 10.0
    )
    detections = tuple(
        Detection(frame_id, t, name, p, 0.5, meta.along_m(128), meta.across_mm(t * 256 + 128),
                  meta.along_m(0), meta.along_m(256), t * 256, 0, 256)
        for t, name, p in found
    )  # fmt: skip
    policy = EvidencePolicy(clean_sample=0.0)
    crops = tuple(
        policy.encode(TileRef(frame_id, t, t * 256, 0, 256), np.full((256, 256), 40 + 30 * t, np.uint8))
        for t in sorted({t for t, _, _ in found})
    )
    return FrameResult(meta, KafkaCoordinates("mill.frames", 0, n), MODEL, 7, detections,
                       T0 + timedelta(seconds=n, milliseconds=200), evidence=crops)  # fmt: skip


@pytest.fixture
def console_db(database_url: str, engine: sa.Engine) -> Iterator[dict[str, Any]]:
    """A database with 3 frames (crops of the tiles with detections), one alert citing two
    detections, users of every role, and an engine that logs in as a steel_console login."""
    writer = StorageWriter(engine)
    writer.ensure_catalogue(load_catalogue())
    names = load_catalogue().names
    writer.register_model(MODEL, "resnet50", 256, names, ClassThresholds.from_values(names, [0.5] * 3), {})
    outcome = writer.write_results(
        [
            _frame(0, [(1, "holes", 0.91), (1, "scratches", 0.7)]),
            _frame(1, []),
            _frame(2, [(3, "rolling", 0.8)]),
        ]
    )
    ids = sorted(
        d.record_id for r in outcome.stored.values() for d in r.detections if d.class_name != "scratches"
    )
    with engine.begin() as conn:
        alert_id = conn.execute(
            sa.text(
                "INSERT INTO alerts (dedup_key, rule, class_id, strip_id, severity, position_start_m,"
                " position_end_m, detection_count, evidence, rule_kind, surface, line, camera, frame_ids,"
                " max_confidence, model_version) VALUES ('k1', 'holes-cluster', 1, 'S-1', 'high', 0, 1,"
                " 2, :ev, 'density', 'top', 'L1', 'cam-top-1', '{S-1-f000,S-1-f002}', 0.91, :m) RETURNING id"
            ),
            {"ev": ids, "m": MODEL},
        ).scalar_one()
    for role in ("viewer", "reviewer", "maintenance", "admin"):
        set_user(engine, role, role, PASSWORD)
    login = f"steel_test_console_{uuid.uuid4().hex[:10]}"
    create_login(database_url, login, "console", "console-pass-1")
    url = (
        make_url(database_url)
        .set(username=login, password="console-pass-1")
        .render_as_string(hide_password=False)
    )
    console_engine = create_engine(url)
    try:
        yield {"engine": console_engine, "owner": engine, "alert_id": alert_id}
    finally:
        console_engine.dispose()
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP ROLE "{login}"'))


@pytest.fixture
def client(console_db: dict[str, Any]) -> TestClient:
    return TestClient(create_app(console_db["engine"], SECRET, secure_cookies=False), follow_redirects=False)


def _fixed_offset(seconds: int) -> timezone:
    return timezone(timedelta(seconds=seconds))


def _csrf(client: TestClient, path: str = "/login") -> str:
    match = CSRF.search(client.get(path).text)
    assert match, f"no CSRF token on {path}"
    return match[1]


def _login(client: TestClient, name: str) -> None:
    response = client.post(
        "/login", data={"name": name, "password": PASSWORD, "csrf": _csrf(client), "next": "/"}
    )
    assert response.status_code == 303 and response.headers["location"] == "/", response.text


def _acknowledged(console_db: dict[str, Any]) -> tuple[Any, ...]:
    with console_db["owner"].connect() as conn:
        return tuple(
            conn.execute(
                sa.text("SELECT acknowledged_by, acknowledged_at IS NOT NULL FROM alerts WHERE id = :i"),
                {"i": console_db["alert_id"]},
            ).one()
        )


def _reviews(console_db: dict[str, Any]) -> list[tuple[Any, ...]]:
    with console_db["owner"].connect() as conn:
        rows = conn.execute(
            sa.text("SELECT frame_id, tile_index, verdict, labels, reviewer FROM reviews ORDER BY id")
        )
        return [tuple(r) for r in rows]


# --- access --------------------------------------------------------------------------------------------

PAGES = [
    "/",
    "/alerts",
    "/alerts/1",
    "/gallery",
    "/crop?frame_id=S-1-f000&tile=1",
    "/crop/image?frame_id=S-1-f000&tile=1",
    "/quality",
]


@pytest.mark.parametrize("path", PAGES)
def test_no_page_is_reachable_without_a_login(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 303 and response.headers["location"].startswith("/login?next=")


@pytest.mark.parametrize("path", ["/alerts/1/ack", "/crop/review"])
def test_no_form_is_accepted_without_a_login(client: TestClient, path: str) -> None:
    assert client.post(path, data={"csrf": _csrf(client)}).status_code == 403


def test_logging_out_needs_the_csrf_token_and_ends_the_session(client: TestClient) -> None:
    _login(client, "viewer")
    assert client.post("/logout", data={"csrf": "forged"}).status_code == 403  # no forced log-out
    assert client.get("/").status_code == 200
    assert client.post("/logout", data={"csrf": _csrf(client, "/")}).status_code == 303
    assert client.get("/").status_code == 303


def test_the_health_check_and_the_style_sheet_need_no_login(client: TestClient) -> None:
    assert client.get("/healthz").text == "ok"
    assert client.get("/console.css").headers["content-type"].startswith("text/css")


def test_a_wrong_password_or_an_unknown_name_is_refused_alike(client: TestClient) -> None:
    for name, password in (
        ("viewer", "wrong password!"),
        ("nobody", PASSWORD),
        ("", ""),
        ("x" * 5000, "y" * 5000),
    ):
        response = client.post("/login", data={"name": name, "password": password, "csrf": _csrf(client)})
        assert response.status_code == 401 and "Unknown name or wrong password." in response.text
    assert client.get("/").status_code == 303


def test_a_login_never_redirects_off_the_site(client: TestClient) -> None:
    for target in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
        response = client.post(
            "/login", data={"name": "viewer", "password": PASSWORD, "csrf": _csrf(client), "next": target}
        )
        assert response.status_code == 303 and response.headers["location"] == "/"


def test_a_disabled_user_is_out_at_once(client: TestClient, console_db: dict[str, Any]) -> None:
    _login(client, "viewer")
    assert client.get("/").status_code == 200
    with console_db["owner"].begin() as conn:
        conn.execute(sa.text("UPDATE console_users SET disabled_at = now() WHERE name = 'viewer'"))
    assert client.get("/").status_code == 303


def _copy(client: TestClient, console_db: dict[str, Any]) -> TestClient:
    """Another browser holding a copy of `client`'s cookies (a stolen or replayed cookie)."""
    other = TestClient(create_app(console_db["engine"], SECRET, secure_cookies=False), follow_redirects=False)
    other.cookies.update(dict(client.cookies))
    return other


def test_a_copied_session_cookie_is_refused_after_logout(
    client: TestClient, console_db: dict[str, Any]
) -> None:
    _login(client, "viewer")
    copy = _copy(client, console_db)
    assert copy.get("/").status_code == 200  # a copy works while the session lasts ...
    assert client.post("/logout", data={"csrf": _csrf(client, "/")}).status_code == 303
    assert copy.get("/").status_code == 303  # ... and no longer once its owner logged out
    with console_db["owner"].connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM console_sessions")).scalar() == 0


def test_logging_in_again_ends_the_browsers_previous_session(
    client: TestClient, console_db: dict[str, Any]
) -> None:
    _login(client, "viewer")
    before = _copy(client, console_db)
    _login(client, "reviewer")
    assert before.get("/").status_code == 303 and client.get("/").status_code == 200
    with console_db["owner"].connect() as conn:
        assert conn.execute(sa.text("SELECT user_name FROM console_sessions")).scalars().all() == ["reviewer"]


def test_every_session_of_a_user_ends_when_their_password_is_set_again(
    client: TestClient, console_db: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker import cli  # noqa: PLC0415

    _login(client, "maintenance")
    copy = _copy(client, console_db)
    _login(other := _copy(client, console_db), "viewer")  # another user's session stays
    monkeypatch.setenv("NEW_PASSWORD", "a new password, long enough")
    url = console_db["engine"].url.render_as_string(hide_password=False)  # as the console's login
    assert (
        cli.main(["console", "--database-url", url, "add-user", "maintenance", "--role", "maintenance",
                  "--password-env", "NEW_PASSWORD"])
        == 0
    )  # fmt: skip
    assert client.get("/").status_code == 303 and copy.get("/").status_code == 303
    assert other.get("/").status_code == 200


def test_the_session_table_holds_digests_not_tokens(client: TestClient, console_db: dict[str, Any]) -> None:
    import base64  # noqa: PLC0415
    import hashlib  # noqa: PLC0415
    import json  # noqa: PLC0415

    _login(client, "viewer")
    payload = str(client.cookies.get("steel_console")).split(".")[0]
    token = json.loads(base64.b64decode(payload + "=" * (-len(payload) % 4)))["sid"]
    with console_db["owner"].connect() as conn:
        stored = conn.execute(sa.text("SELECT token_sha256, user_name FROM console_sessions")).one()
        assert (
            conn.execute(
                sa.text("SELECT count(*) FROM console_sessions WHERE token_sha256 = :t"), {"t": token}
            ).scalar()
            == 0
        )
    assert stored.user_name == "viewer"
    assert stored.token_sha256 == hashlib.sha256(token.encode()).hexdigest()


def _gated_client(console_db: dict[str, Any], **limits: Any) -> TestClient:
    from worker.console.throttle import LoginLimits  # noqa: PLC0415

    app = create_app(console_db["engine"], SECRET, secure_cookies=False, login_limits=LoginLimits(**limits))
    return TestClient(app, follow_redirects=False)


def _try(client: TestClient, name: str, password: str = "wrong password!") -> Any:
    return client.post("/login", data={"name": name, "password": password, "csrf": _csrf(client)})


def test_wrong_passwords_beyond_the_limit_answer_429_without_hashing(console_db: dict[str, Any]) -> None:
    client = _gated_client(console_db, per_name=3, per_address=100, window_s=60)
    gate = client.app.state.console.logins  # type: ignore[attr-defined]
    assert [_try(client, "viewer").status_code for _ in range(3)] == [401, 401, 401]
    assert gate.hashed == 3
    for password in ("wrong password!", PASSWORD):  # the right password too: the name is throttled
        refused = _try(client, "viewer", password)
        assert refused.status_code == 429 and "Too many failed logins of this name" in refused.text
        assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert gate.hashed == 3  # refused before any hashing
    assert _try(client, "nobody").status_code == 401 and gate.hashed == 4  # other names are not held
    assert client.get("/").status_code == 303


def test_a_success_clears_its_names_failures(console_db: dict[str, Any]) -> None:
    client = _gated_client(console_db, per_name=3, per_address=100, window_s=60)
    assert [_try(client, "viewer").status_code for _ in range(2)] == [401, 401]
    _login(client, "viewer")
    assert [_try(client, "viewer").status_code for _ in range(2)] == [401, 401]


def test_one_address_trying_many_names_is_throttled(console_db: dict[str, Any]) -> None:
    client = _gated_client(console_db, per_name=100, per_address=4, window_s=60)
    assert [_try(client, f"name-{n}").status_code for n in range(4)] == [401] * 4
    refused = _try(client, "name-5")
    assert refused.status_code == 429 and "from this address" in refused.text
    assert client.app.state.console.logins.hashed == 4  # type: ignore[attr-defined]


def _gate_run(gate: Any, name: str, address: str = "10.0.0.1", ok: bool = False) -> Any:
    import asyncio  # noqa: PLC0415

    return asyncio.run(gate.check(name, address, lambda: "user" if ok else None))


def test_the_login_gate_forgets_failures_after_the_window() -> None:
    from worker.console.throttle import LoginGate, LoginLimits, LoginRefusedError  # noqa: PLC0415

    now = [0.0]
    gate = LoginGate(LoginLimits(per_name=2, per_address=100, window_s=60), clock=lambda: now[0])
    try:
        assert _gate_run(gate, "anna") is None and _gate_run(gate, "anna") is None
        now[0] = 15.0
        with pytest.raises(LoginRefusedError) as refused:
            _gate_run(gate, "anna", ok=True)
        assert refused.value.status == 429 and refused.value.retry_after_s == 45
        now[0] = 60.5  # both failures are older than the window
        assert _gate_run(gate, "anna", ok=True) == "user" and gate.hashed == 3
    finally:
        gate.close()


def test_the_login_gate_answers_503_at_once_when_its_hashing_pool_and_queue_are_full() -> None:
    import asyncio  # noqa: PLC0415
    import threading  # noqa: PLC0415

    from worker.console.throttle import LoginGate, LoginLimits, LoginRefusedError  # noqa: PLC0415

    gate = LoginGate(LoginLimits(per_name=100, per_address=100, hashers=1, waiting=1))
    release = threading.Event()

    async def scenario() -> list[Any]:
        slow = [
            asyncio.ensure_future(gate.check(f"n{i}", "a", lambda: release.wait(10) and None))
            for i in range(2)
        ]
        await asyncio.sleep(0.05)
        started = asyncio.get_running_loop().time()
        with pytest.raises(LoginRefusedError) as busy:
            await gate.check("n3", "a", lambda: None)
        assert busy.value.status == 503 and asyncio.get_running_loop().time() - started < 0.5
        release.set()
        return list(await asyncio.gather(*slow))

    try:
        assert asyncio.run(scenario()) == [None, None]
        assert _gate_run(gate, "n4") is None  # room again
    finally:
        release.set()
        gate.close()


def test_the_login_gate_remembers_a_bounded_number_of_names_and_addresses() -> None:
    from worker.console.throttle import LoginGate, LoginLimits  # noqa: PLC0415

    gate = LoginGate(LoginLimits(), max_keys=10)
    try:
        for n in range(50):
            _gate_run(gate, f"name-{n}", f"10.0.0.{n}")
        assert len(gate._attempts) <= 10
    finally:
        gate.close()


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ({"per_name": 0}, "per_name: expected a whole number ≥ 1, received 0"),
        ({"hashers": 0}, "hashers: expected a whole number ≥ 1"),
        ({"waiting": -1}, "waiting: expected a whole number ≥ 0"),
        ({"window_s": float("nan")}, "window_s: expected 1..86400 seconds"),
    ],
)
def test_login_limits_out_of_range_are_refused(limits: dict[str, Any], message: str) -> None:
    from worker.console.throttle import LoginLimits  # noqa: PLC0415
    from worker.core.errors import ConfigError  # noqa: PLC0415

    with pytest.raises(ConfigError, match=re.escape(message)):
        LoginLimits(**limits)


def test_the_serve_commands_defaults_are_the_consoles() -> None:
    from worker.console import command, queries  # noqa: PLC0415
    from worker.console.throttle import LoginLimits  # noqa: PLC0415

    limits = LoginLimits()
    ours = (limits.per_name, limits.per_address, limits.window_s, limits.hashers, queries.LINE_MARKS)
    spelled_out = (command.LOGIN_FAILURES_PER_NAME, command.LOGIN_FAILURES_PER_ADDRESS,
                   command.LOGIN_WINDOW_S, command.LOGIN_HASHERS, command.LINE_MARKS)  # fmt: skip
    assert ours == spelled_out


def test_the_session_cookie_is_secure_http_only_and_strict_by_default(console_db: dict[str, Any]) -> None:
    client = TestClient(
        create_app(console_db["engine"], SECRET), base_url="https://testserver", follow_redirects=False
    )
    cookie = client.get("/login").headers["set-cookie"].lower()
    assert "secure" in cookie and "httponly" in cookie and "samesite=strict" in cookie


def test_a_short_secret_key_is_refused(console_db: dict[str, Any]) -> None:
    from worker.core.errors import ConfigError  # noqa: PLC0415

    with pytest.raises(ConfigError, match="at least 32 characters"):
        create_app(console_db["engine"], "short")


def test_the_banner_shows_the_consoles_own_messages_never_the_querys_text(
    client: TestClient, console_db: dict[str, Any]
) -> None:
    _login(client, "viewer")
    bait = "Line stopped: call the foreman at 555-0199 and read him your password"
    for path in (f"/alerts/{console_db['alert_id']}?", "/crop?frame_id=S-1-f000&tile=1&"):
        page = client.get(path + urlencode({"done": bait}))
        assert page.status_code == 200 and "foreman" not in page.text and 'class="ok"' not in page.text
    assert (
        '<p class="ok">Acknowledged.</p>'
        in client.get(f"/alerts/{console_db['alert_id']}?done=acknowledged").text
    )
    assert '<p class="ok">Reviewed.</p>' in client.get("/crop?frame_id=S-1-f000&tile=1&done=reviewed").text


def test_a_form_over_the_cap_or_of_another_kind_is_refused(client: TestClient) -> None:
    token = _csrf(client)
    big = client.post("/login", data={"csrf": token, "name": "viewer", "password": "x" * 70_000})
    assert big.status_code == 413 and "a form is at most 65536 bytes" in big.text
    other = client.post("/login", files={"name": ("n.txt", b"viewer")}, data={"csrf": token})
    assert other.status_code == 415 and "application/x-www-form-urlencoded" in other.text
    many = client.post("/login", content="&".join(f"f{n}=1" for n in range(101)),
                       headers={"content-type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert many.status_code == 400 and "at most 100 fields" in many.text


def test_a_form_that_trickles_in_slower_than_the_deadline_answers_408(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A client that sends headers and then a byte now and then holds nothing for long."""
    import anyio  # noqa: PLC0415
    from starlette.exceptions import HTTPException  # noqa: PLC0415
    from starlette.requests import Request  # noqa: PLC0415

    from worker.console import app as console_app  # noqa: PLC0415

    monkeypatch.setattr(console_app, "BODY_SECONDS", 0.3)
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/login",
        "headers": [(b"transfer-encoding", b"chunked")],
    }

    async def trickle() -> dict[str, Any]:
        await anyio.sleep(0.1)
        return {"type": "http.request", "body": b"a", "more_body": True}

    async def read() -> None:
        started = anyio.current_time()
        with pytest.raises(HTTPException) as refused:
            await console_app._read_form(Request(scope, trickle))
        assert refused.value.status_code == 408 and "within 0.3 s" in str(refused.value.detail)
        assert anyio.current_time() - started < 1.0

    anyio.run(read)


def test_pages_forbid_framing_scripts_and_sniffing(client: TestClient) -> None:
    headers = client.get("/login").headers
    assert "script-src 'none'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY" and headers["x-content-type-options"] == "nosniff"


# --- pages ---------------------------------------------------------------------------------------------


def test_a_viewer_sees_every_page(client: TestClient, console_db: dict[str, Any]) -> None:
    _login(client, "viewer")
    alert_id = console_db["alert_id"]
    line = client.get("/")
    assert line.status_code == 200 and "S-1" in line.text and 'class="detection"' in line.text
    assert 'http-equiv="refresh"' in line.text and f'href="/alerts/{alert_id}"' in line.text
    alerts = client.get("/alerts")
    assert alerts.status_code == 200 and "holes-cluster" in alerts.text
    assert load_catalogue().get("holes").cause in alerts.text
    page = client.get(f"/alerts/{alert_id}")
    assert page.status_code == 200 and page.text.count('<img src="/crop/image?') == 2
    assert 'id="acknowledge"' not in page.text  # a viewer has no button
    gallery = client.get("/gallery")
    assert gallery.status_code == 200 and "2 crops" in gallery.text
    assert "1 crops" in client.get("/gallery?class=rolling").text
    assert "2 crops" in client.get("/gallery?min_confidence=0.75").text
    assert "0 crops" in client.get("/gallery?strip=S-9").text
    crop = client.get("/crop?frame_id=S-1-f000&tile=1")
    assert crop.status_code == 200 and "holes" in crop.text and "scratches" in crop.text
    assert 'id="review"' not in crop.text  # a viewer cannot review
    image = client.get("/crop/image?frame_id=S-1-f000&tile=1")
    assert image.headers["content-type"] == "image/jpeg"
    assert abs(float(decode(image.content).mean()) - 70) < 2
    quality = client.get("/quality")
    assert quality.status_code == 200 and "not reviewed yet" in quality.text


def test_a_viewer_can_neither_acknowledge_nor_review(client: TestClient, console_db: dict[str, Any]) -> None:
    _login(client, "viewer")
    token = _csrf(client, "/")
    assert client.post(f"/alerts/{console_db['alert_id']}/ack", data={"csrf": token}).status_code == 403
    review = {"csrf": token, "frame_id": "S-1-f000", "tile": "1", "verdict": "reject"}
    assert client.post("/crop/review", data=review).status_code == 403
    assert _acknowledged(console_db) == (None, False) and _reviews(console_db) == []


def test_maintenance_acknowledges_once_and_the_second_time_is_refused(
    client: TestClient, console_db: dict[str, Any]
) -> None:
    _login(client, "maintenance")
    alert_id = console_db["alert_id"]
    assert 'id="acknowledge"' in client.get(f"/alerts/{alert_id}").text
    response = client.post(f"/alerts/{alert_id}/ack", data={"csrf": _csrf(client, "/")})
    assert response.status_code == 303 and _acknowledged(console_db) == ("maintenance", True)
    again = client.post(f"/alerts/{alert_id}/ack", data={"csrf": _csrf(client, "/")})
    assert again.status_code == 409 and "already acknowledged by maintenance" in again.text
    assert "No open alert." in client.get("/alerts").text
    assert client.post("/alerts/999999/ack", data={"csrf": _csrf(client, "/")}).status_code == 404


def test_a_reviewer_confirms_rejects_and_corrects_and_the_newest_review_counts(
    client: TestClient, console_db: dict[str, Any]
) -> None:
    _login(client, "reviewer")

    def review(verdict: str, *labels: str, tile: str = "1") -> Any:
        data = {
            "csrf": _csrf(client, "/"),
            "frame_id": "S-1-f000",
            "tile": tile,
            "verdict": verdict,
            "labels": list(labels),
        }
        return client.post("/crop/review", data=data)

    assert review("confirm").status_code == 303
    assert review("reject").status_code == 303
    assert review("correct", "rolling", "holes").status_code == 303
    assert _reviews(console_db) == [
        ("S-1-f000", 1, "confirm", ["holes", "scratches"], "reviewer"),
        ("S-1-f000", 1, "reject", [], "reviewer"),
        ("S-1-f000", 1, "correct", ["holes", "rolling"], "reviewer"),  # catalogue order
    ]
    assert review("correct").status_code == 400  # no class named
    bad = review("correct", "oil drops")
    assert bad.status_code == 400 and "not classes" in bad.text
    assert review("maybe").status_code == 400
    assert review("confirm", tile="5").status_code == 404  # no crop of tile 5
    assert len(_reviews(console_db)) == 3
    crop = client.get("/crop?frame_id=S-1-f000&tile=1").text
    assert 'id="review"' in crop and "holes, rolling" in crop
    quality = client.get("/quality").text  # newest review: holes kept, scratches dropped
    assert re.search(r"<td>holes</td><td>1</td><td>1</td>\s*<td>1.000</td>", quality)
    assert re.search(r"<td>scratches</td><td>1</td><td>0</td>\s*<td>0.000</td>", quality)


def test_a_form_without_the_session_csrf_token_changes_nothing(
    client: TestClient, console_db: dict[str, Any]
) -> None:
    _login(client, "admin")
    alert_id = console_db["alert_id"]
    for data in ({}, {"csrf": ""}, {"csrf": "forged-token"}):
        response = client.post(f"/alerts/{alert_id}/ack", data=data)
        assert response.status_code == 403 and "CSRF" in response.text
        review = {**data, "frame_id": "S-1-f000", "tile": "1", "verdict": "reject"}
        assert client.post("/crop/review", data=review).status_code == 403
    other = TestClient(create_app(console_db["engine"], SECRET, secure_cookies=False), follow_redirects=False)
    stolen = _csrf(other)  # a token of another session
    assert client.post(f"/alerts/{alert_id}/ack", data={"csrf": stolen}).status_code == 403
    assert _acknowledged(console_db) == (None, False) and _reviews(console_db) == []


BAD_REQUESTS = [
    ("/gallery?since=yesterday", 400, "since: expected a date"),
    ("/gallery?until=2026-13-45", 400, "until: expected a date"),
    ("/gallery?min_confidence=2", 400, "min_confidence: expected a number 0..1"),
    ("/gallery?min_confidence=nan", 400, "min_confidence"),
    ("/gallery?class=oil", 400, "class: expected one of holes"),
    ("/gallery?page=0", 400, "page: expected 1..100000"),
    ("/gallery?page=99", 400, "page: expected 1..1"),
    ("/gallery?page=1e9", 400, "page: expected an integer"),
    ("/crop?frame_id=S-1-f000&tile=abc", 400, "tile: expected an integer"),
    ("/crop?frame_id=S-1-f000", 400, "tile: expected an integer, received nothing"),
    ("/crop?tile=1", 400, "frame_id: expected the frame"),
    ("/crop?frame_id=S-1-f000&tile=6", 404, "no crop of tile 6"),
    ("/crop/image?frame_id=nope&tile=0", 404, "no crop"),
    ("/alerts/abc", 400, "alert id: expected an integer"),
    ("/alerts/424242", 404, "no alert 424242"),
    ("/?strips=0", 400, "strips: expected 1..50"),
    # dates PostgreSQL or Python cannot take: 400 with what is expected, never a 500
    ("/gallery?since=2026-11-30T06:00%2B20:00", 400, "since: expected a UTC offset of whole minutes"),
    ("/gallery?until=2026-11-30T06:00-16:00", 400, "until: expected a UTC offset"),
    ("/gallery?since=2026-11-30T06:00%2B05:30:15.5", 400, "since: expected a UTC offset"),
    ("/gallery?since=0001-01-01", 400, "since: expected a time between 0001-01-02 and 9999-12-30"),
    ("/gallery?until=0001-01-01T00:00%2B01:00", 400, "until: expected a time between"),
    ("/gallery?until=9999-12-31T23:59-05:00", 400, "until: expected a time between"),
]


@pytest.mark.parametrize(("path", "status", "message"), BAD_REQUESTS)
def test_bad_parameters_get_a_4xx_that_says_what_was_expected(
    client: TestClient, path: str, status: int, message: str
) -> None:
    _login(client, "viewer")
    response = client.get(path)
    assert response.status_code == status and message in response.text, response.text[:500]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.datetimes(
        timezones=st.none() | st.timezones() | st.builds(_fixed_offset, st.integers(-86_399, 86_399))
    ),
    st.sampled_from(["since", "until"]),
    st.sampled_from(["seconds", "minutes", "hours", "auto"]),
)
def test_no_date_makes_the_gallery_fail(client: TestClient, moment: datetime, name: str, spec: str) -> None:
    """Any ISO date Python can write, in any zone or offset (to a second), answers 200 or 400."""
    if not client.cookies:
        _login(client, "viewer")
    response = client.get("/gallery", params={name: moment.isoformat(timespec=spec)})
    assert response.status_code in (200, 400), (moment.isoformat(), response.status_code, response.text[:300])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.dictionaries(
        st.sampled_from(
            ["class", "strip", "since", "until", "min_confidence", "page", "sampled", "frame_id", "tile"]
        ),
        st.text(max_size=60),
        max_size=5,
    ),
    st.sampled_from(["/gallery", "/crop", "/crop/image", "/"]),
)
def test_no_query_string_makes_a_page_fail(client: TestClient, params: dict[str, str], path: str) -> None:
    if not client.cookies:
        _login(client, "viewer")
    response = client.get(path, params=params)
    assert response.status_code in (200, 400, 404), (path, params, response.status_code, response.text[:300])


# --- the line view: what "now" is, and strips with many detections ----------------------------------


def _strip_rows(
    engine: sa.Engine, strip: str, *, frames: int, tiles: int, captured: str, processed: str
) -> None:
    """`frames` frames 0.4 m apart of `strip`, each with a detection on each of `tiles` tiles (the
    three classes in turn), captured and processed one second apart from the times given."""
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO frames (frame_id, strip_id, line, camera, surface, captured_at, position_m,"
                " length_m, width_mm, model_version, kafka_topic, kafka_partition, kafka_offset, tile_count,"
                " detection_count, processed_at)"
                " SELECT :s || '-f' || n, :s, 'L1', 'cam-top-1', 'top',"
                " CAST(:c AS timestamptz) + n * interval '1 second', n * 0.4, 0.4, 1800, :m,"
                " 'mill.frames', 1, n, :t, :t, CAST(:p AS timestamptz) + n * interval '1 second'"
                " FROM generate_series(0, :f - 1) AS n"
            ),
            {"s": strip, "c": captured, "p": processed, "m": MODEL, "t": tiles, "f": frames},
        )
        conn.execute(
            sa.text(
                "INSERT INTO detections (frame_id, tile_index, class_id, confidence, threshold, along_m,"
                " across_mm, along_start_m, along_end_m, x, y, size)"
                " SELECT :s || '-f' || n, t, t % 3 + 1, 0.6 + (t % 40) * 0.01, 0.5, n * 0.4 + 0.2, t * 9.0,"
                " n * 0.4, n * 0.4 + 0.4, t * 256, 0, 256"
                " FROM generate_series(0, :f - 1) AS n, generate_series(0, :t - 1) AS t"
            ),
            {"s": strip, "t": tiles, "f": frames},
        )


def test_a_strip_with_100000_detections_is_drawn_per_metre_within_a_size_bound(
    client: TestClient, console_db: dict[str, Any]
) -> None:
    _strip_rows(console_db["owner"], "S-BIG", frames=500, tiles=200, captured="2026-11-30T07:00Z",
                processed="2026-11-30T07:00Z")  # fmt: skip
    _login(client, "viewer")
    started = time.monotonic()
    page = client.get("/")
    print(
        f"line view with a 100 000-detection strip: {len(page.content)} bytes"
        f" in {time.monotonic() - started:.2f} s"
    )
    assert page.status_code == 200 and len(page.content) < 300_000, len(page.content)  # main: 21 MB
    big = page.text[page.text.index("<h2>S-BIG") : page.text.index("<h2>S-1")]
    assert 'class="detection"' not in big and "drawn per 1 m and class" in big
    counts = [int(n) for n in re.findall(r"<title>\w+: (\d+) detections at \d+–\d+ m", big)]
    assert len(counts) == 200 * 3 and sum(counts) == 100_000  # 200 m × 3 classes, every detection once
    assert 'href="/gallery?strip=S-BIG&amp;class=holes"' in big
    assert page.text.count('class="detection"') == 3  # the small strip keeps a dot per detection


def test_the_line_view_puts_the_strip_processed_last_first_whatever_the_camera_clocks(
    client: TestClient, console_db: dict[str, Any]
) -> None:
    """A camera clock set to 2199 does not pin its strip to the top, and one reset to 2000 does not
    hide the strip being rolled now: the order is the worker's processing time."""
    owner = console_db["owner"]  # S-1 was processed on 2026-11-30 at 06:00
    _strip_rows(
        owner, "S-2199", frames=3, tiles=1, captured="2199-01-01T00:00Z", processed="2026-11-30T07:00Z"
    )
    _strip_rows(
        owner, "S-NOW", frames=3, tiles=1, captured="2000-01-01T00:00Z", processed="2026-11-30T08:00Z"
    )
    _login(client, "viewer")
    text = client.get("/").text
    assert text.index("<h2>S-NOW") < text.index("<h2>S-2199") < text.index("<h2>S-1 ")
    two = client.get("/?strips=2").text
    assert "<h2>S-NOW" in two and "<h2>S-2199" in two and "<h2>S-1 " not in two


# --- the roles in the database ----------------------------------------------------------------------


def test_read_only_pages_cannot_write_even_if_asked(console_db: dict[str, Any]) -> None:
    with (
        pytest.raises(sa.exc.DBAPIError, match="read-only transaction"),
        read_only(console_db["engine"]) as conn,
    ):
        conn.execute(
            sa.text(
                "INSERT INTO reviews (frame_id, tile_index, verdict, labels, model_version, reviewer)"
                " VALUES ('S-1-f000', 1, 'reject', '{}', 'm', 'x')"
            )
        )


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE alerts SET severity = 'low'",
        "DELETE FROM detections",
        "DELETE FROM reviews",
        "UPDATE reviews SET verdict = 'reject'",
        "INSERT INTO frames (frame_id) VALUES ('x')",
        "DELETE FROM tile_images",
    ],
)
def test_the_console_role_can_write_nothing_but_its_own(console_db: dict[str, Any], statement: str) -> None:
    with (
        pytest.raises(sa.exc.ProgrammingError, match="permission denied"),
        console_db["engine"].begin() as conn,
    ):
        conn.execute(sa.text(statement))


def test_the_analysts_cannot_read_the_password_hashes(console_db: dict[str, Any]) -> None:
    with (
        pytest.raises(sa.exc.ProgrammingError, match="permission denied"),
        read_only(console_db["engine"]) as conn,
    ):
        conn.execute(sa.text("SELECT password_hash FROM console_users"))


def test_the_wilson_interval_brackets_the_proportion() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)
    low, high = wilson_interval(8, 10)
    assert (
        low < 0.8 < high
        and low == pytest.approx(0.490, abs=0.002)
        and high == pytest.approx(0.943, abs=0.002)
    )
    assert wilson_interval(10, 10)[1] == 1.0 and wilson_interval(0, 10)[0] == 0.0


def test_a_frame_without_crops_has_no_crop_page(client: TestClient) -> None:
    _login(client, "viewer")
    assert client.get("/crop?frame_id=S-1-f001&tile=0").status_code == 404


def test_the_console_command_adds_updates_and_disables_users(
    database_url: str, engine: sa.Engine, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from worker import cli  # noqa: PLC0415

    url = ["console", "--database-url", database_url]
    monkeypatch.setenv("ANNA_PASSWORD", PASSWORD)
    assert (
        cli.main([*url, "add-user", "anna", "--role", "maintenance", "--password-env", "ANNA_PASSWORD"]) == 0
    )
    assert capsys.readouterr().out == "user anna created with the role maintenance\n"
    assert cli.main([*url, "add-user", "anna", "--role", "viewer", "--password-env", "ANNA_PASSWORD"]) == 0
    assert "updated with the role viewer" in capsys.readouterr().out
    with engine.connect() as conn:
        stored = conn.execute(
            sa.text("SELECT role, password_hash FROM console_users WHERE name = 'anna'")
        ).one()
    assert (
        stored.role == "viewer"
        and stored.password_hash.startswith("$argon2id$")
        and PASSWORD not in stored[1]
    )
    monkeypatch.setenv("SHORT", "short")
    assert cli.main([*url, "add-user", "bob", "--role", "viewer", "--password-env", "SHORT"]) == 2
    assert "a password has 10 to 1024 characters, received one of 5" in capsys.readouterr().err
    assert cli.main([*url, "add-user", "bob", "--role", "viewer", "--password-env", "UNSET_VARIABLE"]) == 2
    assert "UNSET_VARIABLE to hold the password, but it is not set" in capsys.readouterr().err
    assert cli.main([*url, "disable-user", "anna"]) == 0
    assert cli.main([*url, "disable-user", "anna"]) == 2
    assert "no enabled user named 'anna'" in capsys.readouterr().err
    monkeypatch.delenv("CONSOLE_SECRET_KEY", raising=False)
    assert cli.main([*url, "serve"]) == 2
    assert "set CONSOLE_SECRET_KEY" in capsys.readouterr().err


# --- the reviews topic ---------------------------------------------------------------------------------


def test_reviews_reach_the_reviews_topic_once_each_and_only_when_a_topic_is_set(
    console_db: dict[str, Any], broker: Any, make_topic: Any
) -> None:
    import json  # noqa: PLC0415

    from kafka import KafkaProducer  # noqa: PLC0415
    from streaming_harness import read_topic  # noqa: PLC0415

    from worker.console.outbox import ReviewPublisher, publish_pending  # noqa: PLC0415
    from worker.core import contracts  # noqa: PLC0415

    topic = make_topic("reviews")
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, acks="all")
    publisher = ReviewPublisher(console_db["engine"], producer, topic, retry_s=0.2).start()
    try:
        app = create_app(console_db["engine"], SECRET, secure_cookies=False, on_review=publisher.kick)
        client = TestClient(app, follow_redirects=False)
        _login(client, "reviewer")
        for verdict, labels in (("confirm", []), ("correct", ["rolling"])):
            data = {
                "csrf": _csrf(client, "/"),
                "frame_id": "S-1-f000",
                "tile": "1",
                "verdict": verdict,
                "labels": labels,
            }
            assert client.post("/crop/review", data=data).status_code == 303
        records = read_topic(broker.bootstrap_servers, topic, at_least=2, timeout_s=20)
    finally:
        publisher.stop()
    messages = [json.loads(r.value) for r in records]
    for record, message in zip(records, messages, strict=True):
        contracts.validate(contracts.REVIEW, message)
        assert record.key == b"S-1-f000/1"
    assert [(m["verdict"], m["labels"], m["model_classes"]) for m in messages] == [
        ("confirm", ["holes", "scratches"], ["holes", "scratches"]),
        ("correct", ["rolling"], ["holes", "scratches"]),
    ]
    assert publish_pending(console_db["engine"], producer, topic) == 0  # all marked: nothing twice
    producer.close()
    with console_db["owner"].connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM reviews WHERE published_at IS NULL")).scalar() == 0


def test_without_a_topic_reviews_are_stored_and_wait_unpublished(
    client: TestClient, console_db: dict[str, Any]
) -> None:
    _login(client, "reviewer")
    data = {"csrf": _csrf(client, "/"), "frame_id": "S-1-f002", "tile": "3", "verdict": "reject"}
    assert client.post("/crop/review", data=data).status_code == 303
    with console_db["owner"].connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM reviews WHERE published_at IS NULL")).scalar() == 1


def test_serving_with_a_topic_but_no_kafka_says_what_is_missing(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from worker import cli  # noqa: PLC0415

    monkeypatch.setenv("CONSOLE_SECRET_KEY", SECRET)
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    assert (
        cli.main(["console", "--database-url", database_url, "serve", "--reviews-topic", "mill.reviews"]) == 2
    )
    assert "--reviews-topic needs Kafka" in capsys.readouterr().err


# --- heat maps -----------------------------------------------------------------------------------------


def test_a_heat_map_is_drawn_by_the_model_version_that_made_the_detection(
    console_db: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> None:
    import cv2  # noqa: PLC0415
    from streaming_harness import untrained_model  # noqa: PLC0415

    from worker.console.explainer import Explainer  # noqa: PLC0415
    from worker.model.artefact import read_model_meta  # noqa: PLC0415

    model_dir = untrained_model(tmp_path_factory)
    meta = read_model_meta(model_dir)
    names = load_catalogue().names
    writer = StorageWriter(console_db["owner"])
    writer.register_model(
        meta["version"],
        meta["backbone"],
        meta["input_size"],
        names,
        ClassThresholds.from_values(names, [0.5] * 3),
        {},
    )
    with console_db["owner"].begin() as conn:  # frame 0 was judged by that model; frame 2 by one not at hand
        conn.execute(
            sa.text("UPDATE frames SET model_version = :v WHERE frame_id = 'S-1-f000'"),
            {"v": meta["version"]},
        )
    app = create_app(
        console_db["engine"], SECRET, secure_cookies=False, explainer=Explainer(model_dir.parent)
    )
    client = TestClient(app, follow_redirects=False)
    _login(client, "viewer")
    assert 'class="explain"' in client.get("/crop?frame_id=S-1-f000&tile=1").text
    response = client.get("/crop/explain", params={"frame_id": "S-1-f000", "tile": "1", "class": "holes"})
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    painted = cv2.imdecode(np.frombuffer(response.content, np.uint8), cv2.IMREAD_COLOR)
    assert painted.shape == (256, 256, 3)
    unknown = client.get("/crop/explain", params={"frame_id": "S-1-f000", "tile": "1", "class": "oil"})
    assert unknown.status_code == 400 and "no class" in unknown.text
    elsewhere = client.get("/crop/explain", params={"frame_id": "S-1-f002", "tile": "3", "class": "rolling"})
    assert elsewhere.status_code == 404 and "is not among the artefacts" in elsewhere.text
    assert client.get("/crop/explain", params={"frame_id": "S-1-f000", "tile": "1"}).status_code == 400

    without = TestClient(
        create_app(console_db["engine"], SECRET, secure_cookies=False), follow_redirects=False
    )
    _login(without, "viewer")
    off = without.get("/crop/explain", params={"frame_id": "S-1-f000", "tile": "1", "class": "holes"})
    assert off.status_code == 404 and "start the console with --models" in off.text


# --- single sign-on through a reverse proxy -------------------------------------------------------------


def test_a_trusted_proxy_header_logs_in_enabled_users_with_their_own_role(console_db: dict[str, Any]) -> None:
    app = create_app(console_db["engine"], SECRET, secure_cookies=False, trusted_user_header="X-Remote-User")
    client = TestClient(app, follow_redirects=False)
    as_viewer = {"X-Remote-User": "viewer"}
    page = client.get("/", headers=as_viewer)
    assert page.status_code == 200  # no password asked
    token = CSRF.search(page.text)[1]  # type: ignore[index]
    ack = client.post(f"/alerts/{console_db['alert_id']}/ack", data={"csrf": token}, headers=as_viewer)
    assert ack.status_code == 403  # the role is still the user's
    assert client.get("/", headers={"X-Remote-User": "nobody"}).status_code == 303  # not a user
    with console_db["owner"].begin() as conn:
        conn.execute(sa.text("UPDATE console_users SET disabled_at = now() WHERE name = 'viewer'"))
    assert client.get("/", headers=as_viewer).status_code == 303  # disabled: out
    maintenance = {"X-Remote-User": "maintenance"}
    done = client.post(f"/alerts/{console_db['alert_id']}/ack", data={"csrf": token}, headers=maintenance)
    assert done.status_code == 303 and _acknowledged(console_db) == ("maintenance", True)


def test_without_the_setting_the_header_is_only_a_header(client: TestClient) -> None:
    assert client.get("/", headers={"X-Remote-User": "admin"}).status_code == 303


def test_a_trusted_header_that_is_not_a_header_name_is_refused(console_db: dict[str, Any]) -> None:
    from worker.core.errors import ConfigError  # noqa: PLC0415

    with pytest.raises(ConfigError, match="expected a header name"):
        create_app(console_db["engine"], SECRET, trusted_user_header="X-User: admin")


def test_the_demo_console_takes_another_free_port_when_its_port_is_taken(database_url: str) -> None:
    import urllib.request  # noqa: PLC0415

    from worker.demo.console_view import start_console  # noqa: PLC0415

    first = start_console(database_url, port=0)
    try:
        taken = int(first.url.rsplit(":", 1)[1].strip("/"))
        second = start_console(database_url, port=taken)
        try:
            assert second.url != first.url
            with urllib.request.urlopen(second.url + "healthz", timeout=5) as response:
                assert response.read() == b"ok"
        finally:
            second.stop()
    finally:
        first.stop()
