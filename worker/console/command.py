"""`steel-worker console`: serve the web console; add, update or disable its users."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from worker.core.errors import ConfigError

#: `worker.storage.tables.CONSOLE_ROLES`, spelled out so that `--help` imports no SQLAlchemy.
ROLES = ("viewer", "reviewer", "maintenance", "admin")
#: `worker.console.throttle.LoginLimits`' and `worker.console.queries.LINE_MARKS`' defaults, spelled
#: out for the same reason (a test checks they agree).
LOGIN_FAILURES_PER_NAME = 5
LOGIN_FAILURES_PER_ADDRESS = 20
LOGIN_WINDOW_S = 300
LOGIN_HASHERS = 1
LINE_MARKS = 500

_EPILOG = """\
examples:
  CONSOLE_SECRET_KEY=$(openssl rand -hex 32) DATABASE_URL=postgresql://console_app:...@db/defects \\
      steel-worker console serve --host 0.0.0.0 --port 8080
      serve the console; put it behind a TLS-terminating reverse proxy (cookies are Secure)
  ANNA_PASSWORD=... steel-worker console add-user anna --role maintenance --password-env ANNA_PASSWORD
      create (or update: role, password, enabled again) the user anna
  steel-worker console disable-user anna       lock anna out; her reviews and acknowledgements keep her name

Roles nest: viewer reads every page; reviewer also reviews crops; maintenance also acknowledges
alerts; admin may all of it. The database login must be a member of steel_console
(`steel-worker db create-login NAME --role console`): read-only pages then run as the analysts'
read-only role, and the console can write reviews and acknowledgements, nothing else.
Passwords are read from the environment variable --password-env names, never from a flag.

Logins are throttled: after --login-failures-per-name failed logins of one name, or
--login-failures-per-address from one address, within --login-window seconds, further logins of
that name or from that address answer 429 (and say how long to wait) without checking the
password; passwords are checked on --login-hashers threads of their own. Behind a reverse proxy,
name it in --forwarded-allow-ips, or every client shares the proxy's address and its limit.
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "console",
        help="the web console: line view, alerts with their crops, gallery, reviews, quality",
        description=(
            "The web console for maintenance, analysts and reviewers: the strips as defect maps, the "
            "open alerts with the crops behind them (acknowledge), a gallery of crops by class, strip, "
            "time and confidence, reviews that correct the model (they feed `steel-worker dataset "
            "--format reviews`), and precision and drift plots."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL"),
        metavar="URL",
        help="PostgreSQL URL of a steel_console login (default: $DATABASE_URL)",
    )
    actions = parser.add_subparsers(dest="console_action", metavar="ACTION", required=True)
    serve = actions.add_parser("serve", help="serve the console until Ctrl-C")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    serve.add_argument("--port", type=int, default=8080, help="port (default: %(default)s)")
    serve.add_argument(
        "--reviews-topic",
        default=os.environ.get("REVIEWS_TOPIC") or None,
        metavar="TOPIC",
        help="also publish every review (review.v1) on this Kafka topic (default: $REVIEWS_TOPIC; off)",
    )
    serve.add_argument(
        "--bootstrap-servers",
        default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or None,
        metavar="HOST:PORT",
        help="Kafka for --reviews-topic (default: $KAFKA_BOOTSTRAP_SERVERS)",
    )
    serve.add_argument(
        "--models",
        type=Path,
        default=Path(os.environ["CONSOLE_MODELS_DIR"]) if os.environ.get("CONSOLE_MODELS_DIR") else None,
        metavar="DIR",
        help=(
            "model artefacts (a folder of them, or one) for the crops' Grad-CAM heat maps, each drawn by"
            " the version that made the detection (default: $CONSOLE_MODELS_DIR; unset: no heat maps)"
        ),
    )
    serve.add_argument(
        "--trusted-user-header",
        default=os.environ.get("CONSOLE_TRUSTED_USER_HEADER") or None,
        metavar="HEADER",
        help=(
            "single sign-on: take the user's name from this header, set by an authenticating reverse"
            " proxy (e.g. X-Remote-User); ONLY when the proxy is the one way in and drops the header"
            " from clients (default: $CONSOLE_TRUSTED_USER_HEADER; unset: passwords)"
        ),
    )
    serve.add_argument(
        "--login-failures-per-name",
        type=_whole("CONSOLE_LOGIN_FAILURES_PER_NAME", 1),
        default=os.environ.get("CONSOLE_LOGIN_FAILURES_PER_NAME") or LOGIN_FAILURES_PER_NAME,
        metavar="N",
        help=(
            "failed logins of one user name (real or not) within --login-window before further"
            " logins of that name answer 429 without a password check; a success clears them; too"
            " low and a colleague's typos lock a shared name out for the window (default:"
            f" $CONSOLE_LOGIN_FAILURES_PER_NAME or {LOGIN_FAILURES_PER_NAME})"
        ),
    )
    serve.add_argument(
        "--login-failures-per-address",
        type=_whole("CONSOLE_LOGIN_FAILURES_PER_ADDRESS", 1),
        default=os.environ.get("CONSOLE_LOGIN_FAILURES_PER_ADDRESS") or LOGIN_FAILURES_PER_ADDRESS,
        metavar="N",
        help=(
            "failed logins from one client address within --login-window before further logins"
            " from it answer 429: stops one machine trying many names (default:"
            f" $CONSOLE_LOGIN_FAILURES_PER_ADDRESS or {LOGIN_FAILURES_PER_ADDRESS})"
        ),
    )
    serve.add_argument(
        "--login-window",
        type=_whole("CONSOLE_LOGIN_WINDOW_S", 1, 86_400),
        default=os.environ.get("CONSOLE_LOGIN_WINDOW_S") or LOGIN_WINDOW_S,
        metavar="SECONDS",
        help=(
            "how long a failed login counts against its name and address (1..86400; default:"
            f" $CONSOLE_LOGIN_WINDOW_S or {LOGIN_WINDOW_S})"
        ),
    )
    serve.add_argument(
        "--login-hashers",
        type=_whole("CONSOLE_LOGIN_HASHERS", 1, 64),
        default=os.environ.get("CONSOLE_LOGIN_HASHERS") or LOGIN_HASHERS,
        metavar="N",
        help=(
            "threads that check passwords (Argon2id: about 0.1 s of CPU and 64 MiB each); at most 8"
            " more logins per thread wait, beyond that a login answers 503 at once; the pages"
            f" never wait for them (default: $CONSOLE_LOGIN_HASHERS or {LOGIN_HASHERS})"
        ),
    )
    serve.add_argument(
        "--forwarded-allow-ips",
        default=os.environ.get("FORWARDED_ALLOW_IPS") or "127.0.0.1",
        metavar="ADDRESSES",
        help=(
            "comma-separated addresses of the reverse proxies whose X-Forwarded-For names the client"
            " (the address the login throttle counts); '*' trusts anyone, so only when nothing else"
            " can reach the console (default: $FORWARDED_ALLOW_IPS or %(default)s)"
        ),
    )
    serve.add_argument(
        "--line-marks",
        type=_whole("CONSOLE_LINE_MARKS", 1, 100_000),
        default=os.environ.get("CONSOLE_LINE_MARKS") or LINE_MARKS,
        metavar="N",
        help=(
            "a strip with more detections than this is drawn on the line view per metre and class"
            " (a bar each, darker for more) instead of a dot each, which keeps the page small on a"
            f" strip with thousands (default: $CONSOLE_LINE_MARKS or {LINE_MARKS})"
        ),
    )
    serve.add_argument(
        "--insecure-cookies",
        action="store_true",
        help="send the session cookie over plain HTTP too (local trials only; behind TLS leave it off)",
    )
    add = actions.add_parser("add-user", help="create or update a user (role, password; enables it)")
    add.add_argument("name", help="the user's name (1 to 64 printable characters)")
    add.add_argument("--role", required=True, choices=ROLES, help="what the user may do (roles nest)")
    add.add_argument(
        "--password-env",
        required=True,
        metavar="VAR",
        help="environment variable holding the password (10+ chars)",
    )
    disable = actions.add_parser("disable-user", help="lock a user out")
    disable.add_argument("name")
    parser.set_defaults(func=run)


def _whole(variable: str, low: int, high: int = 1_000_000) -> Any:
    """An argparse `type`: a whole number low..high, or an error that names the environment
    variable too (argparse runs `type` on a string default, i.e. the variable's value)."""

    def parse(value: str) -> int:
        text = str(value).strip()
        if not text.isdigit() or not low <= int(text) <= high:
            raise argparse.ArgumentTypeError(
                f"expected a whole number {low}..{high} (from the option or ${variable}), received {value!r}"
            )
        return int(text)

    return parse


def run(args: argparse.Namespace) -> int:
    from worker.storage.engine import create_engine  # noqa: PLC0415

    if not args.database_url:
        raise ConfigError("steel-worker console: no database; set DATABASE_URL or pass --database-url")
    engine = create_engine(args.database_url)
    try:
        if args.console_action == "add-user":
            return _add_user(engine, args)
        if args.console_action == "disable-user":
            from worker.console.users import disable_user  # noqa: PLC0415

            disable_user(engine, args.name)
            print(f"user {args.name} disabled")
            return 0
        return _serve(engine, args)
    finally:
        engine.dispose()


def _add_user(engine: Any, args: argparse.Namespace) -> int:
    from worker.console.users import set_user  # noqa: PLC0415

    password = os.environ.get(args.password_env)
    if not password:
        state = "is empty" if password is not None else "is not set"
        raise ConfigError(
            f"add-user {args.name}: --password-env {args.password_env}: expected the environment"
            f" variable {args.password_env} to hold the password, but it {state}"
        )
    created = set_user(engine, args.name, args.role, password)
    print(f"user {args.name} {'created' if created else 'updated'} with the role {args.role}")
    return 0


def _serve(engine: Any, args: argparse.Namespace) -> int:
    import uvicorn  # noqa: PLC0415

    from worker.console.app import create_app  # noqa: PLC0415
    from worker.console.throttle import LoginLimits  # noqa: PLC0415
    from worker.storage.schema_check import assert_schema_current  # noqa: PLC0415

    secret = os.environ.get("CONSOLE_SECRET_KEY", "")
    if not secret:
        raise ConfigError(
            "console serve: set CONSOLE_SECRET_KEY (at least 32 characters, e.g. `openssl rand -hex 32`);"
            " it signs the session cookies, so keep it the same across restarts and secret"
        )
    assert_schema_current(engine)
    publisher = _review_publisher(engine, args)
    try:
        from worker.console.explainer import Explainer  # noqa: PLC0415

        app = create_app(
            engine,
            secret,
            secure_cookies=not args.insecure_cookies,
            on_review=publisher.kick if publisher else None,
            explainer=Explainer(args.models),
            trusted_user_header=args.trusted_user_header,
            login_limits=LoginLimits(
                per_name=args.login_failures_per_name,
                per_address=args.login_failures_per_address,
                window_s=float(args.login_window),
                hashers=args.login_hashers,
                waiting=8 * args.login_hashers,
            ),
            line_marks=args.line_marks,
        )
        print(f"console: http://{args.host}:{args.port}/ (Ctrl-C stops it)", flush=True)
        uvicorn.run(
            app,
            host=args.host,
            port=args.port,
            log_level="warning",
            access_log=False,
            proxy_headers=True,
            forwarded_allow_ips=args.forwarded_allow_ips,
        )
    finally:
        if publisher is not None:
            publisher.stop()
            publisher.producer.close()  # type: ignore[attr-defined]
    return 0


def _review_publisher(engine: Any, args: argparse.Namespace) -> Any:
    """The reviews outbox's publisher when --reviews-topic is set (started), else None."""
    if not args.reviews_topic:
        return None
    if not args.bootstrap_servers:
        raise ConfigError(
            "console serve: --reviews-topic needs Kafka: set KAFKA_BOOTSTRAP_SERVERS or --bootstrap-servers"
        )
    from kafka import KafkaProducer  # noqa: PLC0415

    from worker.console.outbox import ReviewPublisher  # noqa: PLC0415

    producer = KafkaProducer(
        bootstrap_servers=[s.strip() for s in args.bootstrap_servers.split(",") if s.strip()],
        acks="all",
        retries=5,
        client_id="steel-worker-console",
    )
    return ReviewPublisher(engine, producer, args.reviews_topic).start()
