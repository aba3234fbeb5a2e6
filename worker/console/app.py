"""The web console (Starlette, server-rendered Jinja2 pages, no JavaScript): line view, alerts with
their evidence crops and acknowledgement, the crop gallery, reviews, and the quality page.

Guarantees:
- No page but `/healthz` and `/login` (and the style sheet) answers without a login. A session is
  a row of `console_sessions` (`sessions`) whose random token rides in a signed cookie (HttpOnly,
  SameSite=Strict; Secure unless `secure_cookies` is off for plain-HTTP trials) for at most
  `SESSION_HOURS`; it and its user are read again on every request, so logout, a new password or
  role, or a disabled user ends every copy of the cookie at once.
- Logins pass `throttle.LoginGate`: failures per name and per address are limited (429 beyond,
  before any hashing), and passwords are hashed on a small pool of their own (503 when it is
  full), so a login flood neither takes the pages' threads and connections nor exhausts memory.
- A request body is read up to `MAX_FORM_BYTES` as received, whatever its framing (Content-Length
  or chunked): the first byte over answers 413 and the rest is never read; a body that takes
  longer than `BODY_SECONDS` answers 408.
- Roles nest (viewer < reviewer < maintenance < admin): a page or form that needs more than the
  user has answers 403 and changes nothing.
- Every form carries the session's CSRF token; a POST without the right one answers 403 and
  changes nothing.
- Read-only pages read as the analysts' read-only role in a READ ONLY transaction
  (`queries.read_only`); writes (reviews, acknowledgements) run as the console's role.
- Bad input (an unknown crop, a malformed date or one PostgreSQL cannot take, a confidence out of
  range, a page past the end) answers 400 or 404 with a message saying what was expected; an
  unexpected error answers 500 without details (they are logged).
- The confirmation banner shows one of the console's own messages, chosen by key (`?done=`);
  no text from a URL ever reaches it.
- The line view orders strips by when the worker processed them, not by the cameras' clocks,
  and draws a strip with more than `line_marks` detections per metre: its size is bounded.
"""

from __future__ import annotations

import hmac
import inspect
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode

import anyio
import sqlalchemy as sa
import structlog
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from worker.console import queries, sessions, svg
from worker.console.actions import acknowledge_alert, record_review
from worker.console.explainer import Explainer
from worker.console.throttle import LoginGate, LoginLimits, LoginRefusedError
from worker.console.users import User, authenticate, current
from worker.core.errors import ConfigError, ModelError

log = structlog.get_logger("worker.console")

SESSION_HOURS = sessions.SESSION_HOURS
MAX_FORM_BYTES = 64 * 1024
MAX_FORM_FIELDS = 100
BODY_SECONDS = 10.0
#: `?done=` keys -> the banner shown; any other value shows none
BANNERS = {"acknowledged": "Acknowledged.", "reviewed": "Reviewed."}
#: PostgreSQL takes UTC offsets up to 15:59:59; Python's datetimes hold years 1 to 9999. A day of
#: margin on each side keeps a moment in range in any time zone it is shown in.
EARLIEST = datetime(1, 1, 2, tzinfo=UTC)
LATEST = datetime(9999, 12, 30, tzinfo=UTC)
MAX_OFFSET = timedelta(hours=15, minutes=59)
_STYLE = """
body{font-family:system-ui,sans-serif;margin:0;color:#222}
header{background:#263238;color:#fff;padding:.5em 1em;display:flex;gap:1.2em;align-items:center}
header a{color:#fff;text-decoration:none}header form{margin-left:auto}
main{padding:1em}table{border-collapse:collapse}
td,th{padding:.25em .6em;border-bottom:1px solid #ddd;text-align:left}
.crops{display:flex;flex-wrap:wrap;gap:.8em}.crop{width:200px;font-size:.85em}
.crop img{width:200px;height:200px;image-rendering:pixelated;border:1px solid #999}
.high{color:#b71c1c;font-weight:bold}.medium{color:#e65100}
.error{background:#ffebee;padding:.6em;border-left:4px solid #b71c1c}
.ok{background:#e8f5e9;padding:.6em;border-left:4px solid #2e7d32}.muted{color:#666}
form.inline{display:inline}label{margin-right:.8em}
"""

Handler = Callable[[Request], Awaitable[Response]]


class Console:
    """The console's state: the database engine (a login of `steel_console`), the templates, what
    to call after a review is stored (`on_review`: the reviews outbox, when a topic is set), the
    login gate and how many detections a strip's map draws one by one (`line_marks`)."""

    def __init__(
        self,
        engine: sa.Engine,
        on_review: Callable[[], None] | None = None,
        explainer: Explainer | None = None,
        trusted_user_header: str | None = None,
        *,
        logins: LoginGate | None = None,
        line_marks: int = queries.LINE_MARKS,
    ) -> None:
        self.engine = engine
        self.on_review = on_review or (lambda: None)
        self.explainer = explainer or Explainer(None)
        self.trusted_user_header = trusted_user_header
        self.logins = logins or LoginGate()
        self.line_marks = line_marks
        self.templates = Environment(
            loader=PackageLoader("worker.console", "templates"),
            autoescape=select_autoescape(default=True),
        )

    def page(self, request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        template = self.templates.get_template(name)
        user: User | None = request.scope.get("console_user")
        html = template.render(user=user, csrf=_csrf_token(request), request_path=request.url.path, **context)
        return HTMLResponse(html, status_code=status_code)


def _csrf_token(request: Request) -> str:
    token = request.session.get("csrf")
    if not token:
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return str(token)


async def _read_form(request: Request) -> FormData:
    """The posted form (application/x-www-form-urlencoded), read on the event loop before the
    handler's thread: at most `MAX_FORM_BYTES` as received, whatever the framing (413 at the first
    byte over, the rest never read), within `BODY_SECONDS` (408), at most `MAX_FORM_FIELDS`
    fields (400). Another content type answers 415."""
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_FORM_BYTES):
        raise HTTPException(413, f"a form is at most {MAX_FORM_BYTES} bytes, received {length[:20]}")
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in ("", "application/x-www-form-urlencoded"):
        raise HTTPException(
            415, f"expected a form (application/x-www-form-urlencoded), received {kind[:60]!r}"
        )
    received = bytearray()
    try:
        with anyio.fail_after(BODY_SECONDS):
            async for chunk in request.stream():
                received += chunk
                if len(received) > MAX_FORM_BYTES:
                    raise HTTPException(
                        413, f"a form is at most {MAX_FORM_BYTES} bytes; more were sent (refused there)"
                    )
    except TimeoutError:
        raise HTTPException(408, f"the form did not arrive within {BODY_SECONDS:g} s") from None
    except ClientDisconnect:
        raise HTTPException(400, "the client went away before the form arrived") from None
    try:
        fields: list[tuple[str, str | UploadFile]] = parse_qsl(  # type: ignore[assignment]
            received.decode("latin-1"), keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS
        )
    except ValueError:
        raise HTTPException(400, f"a form has at most {MAX_FORM_FIELDS} fields") from None
    return FormData(fields)


def _form(request: Request) -> FormData:
    """The posted form, after its CSRF token was checked (403 otherwise)."""
    form: FormData = request.state.form
    sent = form.get("csrf")
    expected = request.session.get("csrf")
    if not isinstance(sent, str) or not expected or not hmac.compare_digest(sent, str(expected)):
        raise HTTPException(403, "the form's CSRF token is missing or stale: reload the page and try again")
    return form


PageHandler = Callable[[Console, Request, User], Response]


def requires(role: str) -> Callable[[PageHandler], Callable[..., Any]]:
    """The handler runs for a logged-in user with at least `role`; others are sent to /login (GET)
    or answered 403."""

    def decorate(handler: PageHandler) -> Callable[..., Any]:
        def wrapped(console: Console, request: Request) -> Response:
            name = request.headers.get(console.trusted_user_header) if console.trusted_user_header else None
            with console.engine.connect() as conn:
                user = current(conn, name) if name else sessions.user(conn, request.session.get("sid"))
            if user is None:
                request.session.pop("sid", None)
                if request.method == "GET":
                    return RedirectResponse(
                        "/login?" + urlencode({"next": request.url.path}), status_code=303
                    )
                raise HTTPException(403, "log in first")
            if not user.may(role):
                raise HTTPException(403, f"this needs the role {role} or above; {user.name} is {user.role}")
            request.scope["console_user"] = user
            return handler(console, request, user)

        wrapped.__name__ = handler.__name__
        return wrapped

    return decorate


# --- parameters --------------------------------------------------------------------------------------


def _int(
    value: str | None, what: str, *, low: int = 0, high: int = 2**31 - 1, default: int | None = None
) -> int:
    if value is None or value == "":
        if default is None:
            raise HTTPException(400, f"{what}: expected an integer, received nothing")
        return default
    if not value.isascii() or not value.lstrip("-").isdigit() or len(value) > 12:
        raise HTTPException(400, f"{what}: expected an integer, received {value[:40]!r}")
    number = int(value)
    if not low <= number <= high:
        raise HTTPException(400, f"{what}: expected {low}..{high}, received {number}")
    return number


def _time(value: str | None, what: str) -> datetime | None:
    """An ISO date or time (local time without an offset) that PostgreSQL and Python both take:
    between `EARLIEST` and `LATEST`, with an offset of whole minutes within ±15:59; 400 otherwise."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise HTTPException(
            400,
            f"{what}: expected a date or time such as 2026-11-30 or 2026-11-30T06:00,"
            f" received {value[:40]!r}",
        ) from None
    offset = moment.utcoffset()
    if offset is not None and (abs(offset) > MAX_OFFSET or offset % timedelta(minutes=1)):
        raise HTTPException(
            400,
            f"{what}: expected a UTC offset of whole minutes within ±15:59 (PostgreSQL's range),"
            f" received {value[:40]!r}",
        )
    try:  # in UTC, or the local time as it is: with the margin, in range in every zone
        naive = moment.replace(tzinfo=None) - (offset or timedelta(0))
    except OverflowError:
        naive = datetime.min
    if not EARLIEST.replace(tzinfo=None) <= naive <= LATEST.replace(tzinfo=None):
        raise HTTPException(
            400,
            f"{what}: expected a time between {EARLIEST.date().isoformat()} and {LATEST.date().isoformat()},"
            f" received {value[:40]!r}",
        )
    return moment if moment.tzinfo else moment.astimezone()


def _confidence(value: str | None) -> float | None:
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        raise HTTPException(400, f"min_confidence: expected a number 0..1, received {value[:40]!r}") from None
    if not 0.0 <= number <= 1.0:  # NaN fails too
        raise HTTPException(400, f"min_confidence: expected a number 0..1, received {value[:40]!r}")
    return number


def _text(value: str | None, what: str, limit: int = 200) -> str | None:
    if value is None or value == "":
        return None
    if len(value) > limit or not value.isprintable():
        raise HTTPException(400, f"{what}: expected at most {limit} printable characters")
    return value


# --- pages -------------------------------------------------------------------------------------------


def login_page(console: Console, request: Request) -> Response:
    next_path = request.query_params.get("next") or "/"
    return console.page(request, "login.html", next=_safe_next(next_path), error=None)


def _safe_next(path: str) -> str:
    """Only a path on this site (no scheme, no host, no `//`): the login cannot redirect elsewhere."""
    return path if path.startswith("/") and not path.startswith("//") and "\\" not in path else "/"


async def login(console: Console, request: Request) -> Response:
    """Check the name and password through the login gate (429 or 503 at once when it says no),
    then start a session; the page's thread pool and its connections are never held for hashing."""
    form = _form(request)
    name, password = str(form.get("name") or ""), str(form.get("password") or "")
    next_path = _safe_next(str(form.get("next") or "/"))
    address = request.client.host if request.client else "unknown"
    previous = request.session.get("sid")
    try:
        found = await console.logins.check(name, address, lambda: _log_in(console, name, password, previous))
    except LoginRefusedError as refused:
        log.warning("console.login_throttled", name=name[:64], address=address, status=refused.status)
        page = console.page(request, "login.html", refused.status, next=next_path, error=str(refused))
        page.headers["Retry-After"] = str(refused.retry_after_s)
        return page
    if found is None:
        log.info("console.login_refused", name=name[:64], address=address)
        return console.page(
            request, "login.html", 401, next=next_path, error="Unknown name or wrong password."
        )
    user, token = found
    request.session.clear()
    request.session["sid"] = token
    _csrf_token(request)  # a new token for the new session
    log.info("console.login", name=user.name, role=user.role, address=address)
    return RedirectResponse(next_path, status_code=303)


def _log_in(console: Console, name: str, password: str, previous: object) -> tuple[User, str] | None:
    """On the login gate's pool: the user and a new session's token (the browser's previous session
    ended: no copy of its cookie outlives this login), or None."""
    user = authenticate(console.engine, name, password)
    if user is None:
        return None
    with console.engine.begin() as conn:
        sessions.end(conn, previous)
        return user, sessions.start(conn, user.name, SESSION_HOURS)


def logout(console: Console, request: Request) -> Response:
    """End this session in the database (every copy of its cookie), then forget the cookie."""
    _form(request)
    with console.engine.begin() as conn:
        sessions.end(conn, request.session.get("sid"))
    request.session.clear()
    return RedirectResponse("/login", status_code=303)


@requires("viewer")
def line_view(console: Console, request: Request, user: User) -> Response:
    with queries.read_only(console.engine) as conn:
        count = _int(request.query_params.get("strips"), "strips", low=1, high=50, default=6)
        strips = queries.recent_strips(conn, limit=count)
        marks = queries.strip_marks(conn, strips, limit=console.line_marks)
        names = queries.class_names(conn)
    colours = svg.class_colours(names)
    pictures = {s["strip_id"]: svg.strip_map(s, marks[s["strip_id"]], colours) for s in strips}
    return console.page(
        request, "line.html", strips=strips, pictures=pictures, marks=marks, colours=colours, refresh_s=10
    )


@requires("viewer")
def alerts_page(console: Console, request: Request, user: User) -> Response:
    with queries.read_only(console.engine) as conn:
        rows = queries.open_alerts(conn)
    return console.page(request, "alerts.html", alerts=rows)


def _banner(request: Request) -> str | None:
    """The confirmation banner `?done=` names (`BANNERS`); never the text of the query itself."""
    return BANNERS.get(request.query_params.get("done") or "")


@requires("viewer")
def alert_page(console: Console, request: Request, user: User) -> Response:
    alert_id = _int(request.path_params.get("alert_id"), "alert id", low=1)
    with queries.read_only(console.engine) as conn:
        found = queries.alert(conn, alert_id)
        if found is None:
            raise HTTPException(404, f"no alert {alert_id}")
        crops = queries.alert_crops(conn, alert_id)
    return console.page(request, "alert.html", alert=found, crops=crops, message=_banner(request))


@requires("maintenance")
def acknowledge(console: Console, request: Request, user: User) -> Response:
    alert_id = _int(request.path_params.get("alert_id"), "alert id", low=1)
    _form(request)
    try:
        acknowledge_alert(console.engine, alert_id, user.name)
    except ConfigError as error:
        raise HTTPException(409 if "already" in str(error) else 404, str(error)) from None
    log.info("console.alert_acknowledged", alert_id=alert_id, by=user.name)
    return RedirectResponse(f"/alerts/{alert_id}?done=acknowledged", status_code=303)


@requires("viewer")
def gallery_page(console: Console, request: Request, user: User) -> Response:
    q = request.query_params
    wanted = queries.GalleryFilter(
        class_name=_text(q.get("class"), "class"),
        strip_id=_text(q.get("strip"), "strip"),
        since=_time(q.get("since"), "since"),
        until=_time(q.get("until"), "until"),
        min_confidence=_confidence(q.get("min_confidence")),
        sampled=q.get("sampled") == "1",
        page=_int(q.get("page"), "page", low=1, high=100_000, default=1),
    )
    with queries.read_only(console.engine) as conn:
        names = queries.class_names(conn)
        if wanted.class_name and wanted.class_name not in names:
            raise HTTPException(
                400, f"class: expected one of {', '.join(names)}, received {wanted.class_name!r}"
            )
        crops, total = queries.gallery(conn, wanted)
    pages = max(1, -(-total // queries.GALLERY_PAGE))
    if wanted.page > pages:
        raise HTTPException(400, f"page: expected 1..{pages} for these filters, received {wanted.page}")
    keep = {k: v for k, v in q.items() if k != "page" and v}
    return console.page(
        request,
        "gallery.html",
        crops=crops,
        total=total,
        page=wanted.page,
        pages=pages,
        names=names,
        wanted=wanted,
        query=lambda **change: urlencode({**keep, **{k: str(v) for k, v in change.items()}}),
        colours=svg.class_colours(names),
    )


def _crop_key(request: Request, source: Any) -> tuple[str, int]:
    frame_id = _text(source.get("frame_id"), "frame_id", limit=512)
    if frame_id is None:
        raise HTTPException(400, "frame_id: expected the frame's id, received nothing")
    return frame_id, _int(source.get("tile"), "tile", low=0, high=100_000)


@requires("viewer")
def crop_page(console: Console, request: Request, user: User) -> Response:
    frame_id, tile = _crop_key(request, request.query_params)
    with queries.read_only(console.engine) as conn:
        found = queries.crop(conn, frame_id, tile)
        names = queries.class_names(conn)
    if found is None:
        raise HTTPException(404, f"no crop of tile {tile} of frame {frame_id!r} is stored")
    image = "/crop/image?" + urlencode({"frame_id": frame_id, "tile": tile})
    return console.page(request, "crop.html", crop=found, names=names, image=image, message=_banner(request))


@requires("viewer")
def crop_image(console: Console, request: Request, user: User) -> Response:
    frame_id, tile = _crop_key(request, request.query_params)
    with queries.read_only(console.engine) as conn:
        found = queries.crop_image(conn, frame_id, tile)
    if found is None:
        raise HTTPException(404, f"no crop of tile {tile} of frame {frame_id!r} is stored")
    content_type, data = found
    return Response(data, media_type=content_type, headers={"Cache-Control": "private, max-age=86400"})


@requires("viewer")
def crop_explain(console: Console, request: Request, user: User) -> Response:
    """The crop with a class's Grad-CAM heat map, by the model version that made its detections."""
    frame_id, tile = _crop_key(request, request.query_params)
    class_name = _text(request.query_params.get("class"), "class")
    if class_name is None:
        raise HTTPException(400, "class: expected the class whose heat map to draw, received nothing")
    with queries.read_only(console.engine) as conn:
        found = queries.crop_image(conn, frame_id, tile)
        version = queries.crop_model_version(conn, frame_id)
    if found is None or version is None:
        raise HTTPException(404, f"no crop of tile {tile} of frame {frame_id!r} is stored")
    try:
        png = console.explainer.heat_map_png(version, found[1], class_name)
    except LookupError as error:
        raise HTTPException(404, str(error.args[0])) from None
    except ModelError as error:
        raise HTTPException(400, str(error)) from None
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=86400"})


@requires("reviewer")
def review(console: Console, request: Request, user: User) -> Response:
    form = _form(request)
    frame_id, tile = _crop_key(request, form)
    verdict = str(form.get("verdict") or "")
    labels = [str(v) for v in form.getlist("labels")]
    try:
        stored = record_review(
            console.engine,
            frame_id,
            tile,
            verdict=verdict,
            labels=labels,
            reviewer=user.name,
            note=str(form.get("note") or ""),
        )
    except ConfigError as error:
        raise HTTPException(404 if str(error).startswith("no crop") else 400, str(error)) from None
    log.info("console.reviewed", frame_id=frame_id, tile=tile, verdict=verdict, labels=stored, by=user.name)
    console.on_review()
    return RedirectResponse(
        "/crop?" + urlencode({"frame_id": frame_id, "tile": tile, "done": "reviewed"}), status_code=303
    )


@requires("viewer")
def quality_page(console: Console, request: Request, user: User) -> Response:
    with queries.read_only(console.engine) as conn:
        names = queries.class_names(conn)
        precision = queries.review_precision(conn)
        shares = queries.hourly_shares(conn)
        trained = queries.trained_shares(conn)
    colours = svg.class_colours(names)
    return console.page(
        request,
        "quality.html",
        precision=precision,
        precision_svg=svg.precision_bars(precision, colours),
        shares_svg=svg.share_lines(shares, trained, colours),
        trained=trained,
        colours=colours,
    )


def healthz(console: Console, request: Request) -> Response:
    try:
        with console.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.SQLAlchemyError:
        return PlainTextResponse("database unreachable", status_code=503)
    return PlainTextResponse("ok")


def style(console: Console, request: Request) -> Response:
    return Response(_STYLE, media_type="text/css", headers={"Cache-Control": "max-age=3600"})


# --- the application -----------------------------------------------------------------------------


def create_app(
    engine: sa.Engine,
    secret_key: str,
    *,
    secure_cookies: bool = True,
    on_review: Callable[[], None] | None = None,
    explainer: Explainer | None = None,
    trusted_user_header: str | None = None,
    login_limits: LoginLimits | None = None,
    line_marks: int = queries.LINE_MARKS,
) -> Starlette:
    """The console over `engine` (a login of `steel_console`); `secret_key` signs the session cookies
    (at least 32 characters: whoever knows it can forge a session); `on_review` is called after each
    review is stored (the reviews outbox's `kick`); `explainer` draws Grad-CAM heat maps with the
    models it finds (none: the heat-map links answer 404 and say how to enable them).

    `trusted_user_header`: the header through which a reverse proxy that has authenticated the user
    names them (single sign-on); the name must be an enabled user of `console_users`, whose role
    applies. Only for a console no one can reach but through that proxy, which must drop the
    header from what clients send: whoever can set it is whoever they name.

    `login_limits`: failures per name and address, window, hashing threads (`throttle`);
    `line_marks`: a strip with more detections is drawn per metre on the line view. The console is
    `app.state.console`."""
    if trusted_user_header is not None and not re.fullmatch(r"[A-Za-z0-9-]{1,64}", trusted_user_header):
        raise ConfigError(
            "trusted user header: expected a header name (letters, digits, -),"
            f" received {trusted_user_header!r}"
        )
    if len(secret_key) < 32:
        raise ConfigError(f"CONSOLE_SECRET_KEY: expected at least 32 characters, received {len(secret_key)}")
    if not 1 <= line_marks <= 100_000:
        raise ConfigError(f"line marks: expected 1..100000 detections per strip, received {line_marks}")
    console = Console(
        engine,
        on_review,
        explainer,
        trusted_user_header,
        logins=LoginGate(login_limits),
        line_marks=line_marks,
    )

    def bind(handler: Callable[[Console, Request], Response | Awaitable[Response]]) -> Handler:
        """The handler as an endpoint: a posted form is read here, then the handler (whose database
        calls block) runs on Starlette's thread pool, never on the event loop; a coroutine handler
        (the login: it waits for the login gate's own pool) is awaited here."""

        async def endpoint(request: Request) -> Response:
            if request.method == "POST":
                request.state.form = await _read_form(request)
            if inspect.iscoroutinefunction(handler):
                return await handler(console, request)  # type: ignore[no-any-return]
            return await run_in_threadpool(handler, console, request)  # type: ignore[arg-type]

        return endpoint

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        console.logins.close()

    routes = [
        Route("/healthz", bind(healthz)),
        Route("/console.css", bind(style)),
        Route("/login", bind(login_page), methods=["GET"]),
        Route("/login", bind(login), methods=["POST"]),
        Route("/logout", bind(logout), methods=["POST"]),
        Route("/", bind(line_view)),
        Route("/alerts", bind(alerts_page)),
        Route("/alerts/{alert_id}", bind(alert_page)),
        Route("/alerts/{alert_id}/ack", bind(acknowledge), methods=["POST"]),
        Route("/gallery", bind(gallery_page)),
        Route("/crop", bind(crop_page)),
        Route("/crop/image", bind(crop_image)),
        Route("/crop/explain", bind(crop_explain)),
        Route("/crop/review", bind(review), methods=["POST"]),
        Route("/quality", bind(quality_page)),
    ]

    async def http_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, HTTPException)
        if error.status_code == 405:
            return PlainTextResponse("method not allowed", status_code=405)
        return console.page(
            request, "error.html", error.status_code, status=error.status_code, message=error.detail
        )

    async def unexpected(request: Request, error: Exception) -> Response:
        log.error("console.unexpected_error", path=request.url.path, exc_info=error)
        return PlainTextResponse("internal error (logged)", status_code=500)

    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[
            Middleware(
                SessionMiddleware,
                secret_key=secret_key,
                session_cookie="steel_console",
                max_age=SESSION_HOURS * 3600,
                same_site="strict",
                https_only=secure_cookies,
            ),
            Middleware(_SecurityHeaders),
        ],
        exception_handlers={HTTPException: http_error, Exception: unexpected},
    )
    app.state.console = console
    return app


class _SecurityHeaders:
    """No framing, no sniffing, no script, no referrer across sites (pure ASGI middleware)."""

    HEADERS = (
        (
            b"content-security-policy",
            b"default-src 'self'; img-src 'self'; style-src 'self'; script-src 'none';"
            b" frame-ancestors 'none'; form-action 'self'",
        ),
        (b"x-frame-options", b"DENY"),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"same-origin"),
    )

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], *self.HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)
