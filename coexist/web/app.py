"""The exception workbench: breaks, match reviews and operations in a browser (Starlette + Jinja2).

Server-rendered pages, no external script. Every page needs a session; every form carries a CSRF
token; every action is checked against the user's role and written to the audit trail in the
same transaction as the change. The app works on a database instance it is given (the service's,
or the one `coexist web` opens), a cursor per request, and holds the writer lock while it writes.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hmac
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import duckdb
import jinja2
import orjson
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from coexist.config import Settings
from coexist.web import notify, operations, users
from coexist.web.users import User
from core import audit
from core.errors import CoexistError, Forbidden, NotReady, UsageError
from core.warehouse import Connection, quote, records, transaction
from masterdata import review
from reconcile import work

HERE = Path(__file__).resolve().parent
SESSION_COOKIE = "coexist_session"
LOGIN_COOKIE = "coexist_login"
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@dataclass
class Session:
    user: str
    role: str
    csrf: str
    expires: float
    flash: list[tuple[str, str]] = field(default_factory=list)

    @property
    def who(self) -> User:
        return User(self.user, self.role)


class Sessions:
    """Server-side sessions, in memory: a restart signs everyone out; the cookie holds only a random id."""

    def __init__(self, minutes: int) -> None:
        self.seconds = minutes * 60
        self._by_token: dict[str, Session] = {}
        self._lock = threading.Lock()

    def create(self, user: User) -> tuple[str, Session]:
        token = secrets.token_urlsafe(32)
        session = Session(user.name, user.role, secrets.token_urlsafe(32), time.monotonic() + self.seconds)
        with self._lock:
            self._by_token[token] = session
        return token, session

    def get(self, token: str | None) -> Session | None:
        if not token:
            return None
        with self._lock:
            session = self._by_token.get(token)
            if session is None or session.expires < time.monotonic():
                self._by_token.pop(token, None)
                return None
            session.expires = time.monotonic() + self.seconds
            return session

    def drop(self, token: str | None) -> None:
        with self._lock:
            self._by_token.pop(token or "", None)


class SignInLimit:
    """At most `attempts` failed sign-ins per client address and per user name within `window` seconds."""

    def __init__(self, attempts: int, window: int) -> None:
        self.attempts = attempts
        self.window = window
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def wait_seconds(self, *keys: str) -> int:
        now = time.monotonic()
        with self._lock:
            waits = []
            for key in keys:
                seen = self._failures.get(key, deque())
                while seen and seen[0] < now - self.window:
                    seen.popleft()
                if len(seen) >= self.attempts:
                    waits.append(int(seen[0] + self.window - now) + 1)
            return max(waits, default=0)

    def failed(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._failures.setdefault(key, deque()).append(time.monotonic())


@dataclass
class Database:
    """The warehouse the app works on: a cursor per request, and the lock writers hold."""

    con: Connection
    lock: Any = field(default_factory=threading.Lock)

    @contextlib.contextmanager
    def cursor(self) -> Iterator[Connection]:
        cur = self.con.cursor()
        try:
            yield cur
        finally:
            cur.close()

    @contextlib.contextmanager
    def writing(self) -> Iterator[Connection]:
        with self.lock, self.cursor() as cur:
            yield cur


def _fmt_amount(value: Any) -> str:
    return "" if value is None else f"{value:,.2f}"


def _fmt_time(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return str(value)


def _fmt_json(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        with contextlib.suppress(orjson.JSONDecodeError):
            value = orjson.loads(value)
    return orjson.dumps(value, option=orjson.OPT_INDENT_2, default=str).decode()


def _templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True, undefined=jinja2.StrictUndefined
    )
    env.filters["amount"] = _fmt_amount
    env.filters["when"] = _fmt_time
    env.filters["pretty"] = _fmt_json
    env.filters["days"] = lambda v: "" if v is None else f"{v:.1f}"
    return env


def create_app(
    settings: Settings,
    database: Database,
    jobs: Callable[[], list[dict[str, Any]]] | None = None,
) -> Starlette:
    """The workbench over `database`; `jobs` reports the service's job records for the operations page."""
    web = settings.web
    sessions = Sessions(web.session_minutes)
    limit = SignInLimit(web.sign_in_attempts, web.sign_in_window_seconds)
    env = _templates()
    rules = settings.all_reconciliations()
    entities = list(settings.all_entities())
    people = users.Users(settings.users_path)
    with database.writing() as con:
        work.ensure(con)
        notify.ensure(con)

    def enabled() -> list[str]:
        return [str(u["name"]) for u in people.listing() if not u["disabled"]]

    def cookie(response: Response, name: str, value: str, max_age: int | None = None) -> None:
        response.set_cookie(name, value, max_age=max_age, httponly=True, samesite="strict", secure=web.tls, path="/")

    def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        session: Session | None = request.state.session if hasattr(request.state, "session") else None
        flash = list(session.flash) if session else []
        if session:
            session.flash.clear()
        body = env.get_template(template).render(
            request=request, session=session, flash=flash, path=request.url.path, **context
        )
        return HTMLResponse(body, status_code=status)

    def back(request: Request, to: str, kind: str, message: str) -> RedirectResponse:
        request.state.session.flash.append((kind, message))
        return RedirectResponse(to, status_code=303)

    class Guard(BaseHTTPMiddleware):
        """Sessions, CSRF and the security headers, for every request."""

        async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
            started = time.perf_counter()
            path = request.url.path
            public = path in ("/login", "/favicon.ico") or path.startswith("/static/")
            session = sessions.get(request.cookies.get(SESSION_COOKIE))
            if session is not None:
                role = people.role_of(session.user)
                if role is None:  # disabled or removed since sign-in
                    sessions.drop(request.cookies.get(SESSION_COOKIE))
                    session = None
                else:
                    session.role = role
            request.state.session = session
            if session is None and not public:
                if request.method in ("GET", "HEAD"):
                    response: Response = RedirectResponse("/login?" + urlencode({"next": path}), status_code=303)
                else:
                    response = PlainTextResponse("sign in first", status_code=401)
            elif request.method == "POST" and session is not None and path != "/login":
                form = await request.form()
                request.state.form = form  # the body is read once: endpoints take the form from here
                sent = str(form.get("csrf", ""))
                if not hmac.compare_digest(sent, session.csrf):
                    response = PlainTextResponse("the form's CSRF token is missing or wrong: reload the page", 403)
                else:
                    response = await call_next(request)
            else:
                response = await call_next(request)
            for name, value in HEADERS.items():
                response.headers.setdefault(name, value)
            response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.1f}"
            return response

    def need(request: Request, role: str) -> Session:
        session: Session = request.state.session
        if not session.who.at_least(role):
            raise Forbidden(f"{session.user} is a {session.role}: this needs {role} or above")
        return session

    async def login_page(request: Request) -> Response:
        if request.method == "GET":
            # One token per browser (another tab or a redirected request must not invalidate the form).
            token = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(24)
            response = render(request, "login.html", login_token=token, next=request.query_params.get("next", ""))
            cookie(response, LOGIN_COOKIE, token, max_age=900)
            return response
        form = await request.form()
        sent = str(form.get("login_token", ""))
        if not sent or not hmac.compare_digest(sent, request.cookies.get(LOGIN_COOKIE, "")):
            return PlainTextResponse("the sign-in form's token is missing or wrong: reload the page", 403)
        name = str(form.get("name", ""))[:64]
        password = str(form.get("password", ""))[:1024]
        client = request.client.host if request.client else "unknown"
        keys = (f"ip:{client}", f"user:{name.lower()}")
        wait = limit.wait_seconds(*keys)
        if wait:
            return PlainTextResponse(
                f"too many failed sign-ins: try again in {wait} s", 429, {"Retry-After": str(wait)}
            )
        user = people.verify(name, password)
        if user is None:
            limit.failed(*keys)
            token = secrets.token_urlsafe(24)
            refused = render(request, "login.html", 401, login_token=token, next="", error="wrong name or password")
            cookie(refused, LOGIN_COOKIE, token, max_age=900)
            return refused
        token, _ = sessions.create(user)
        target = str(form.get("next", ""))
        if not target.startswith("/") or target.startswith(("//", "/\\")):
            target = "/breaks"  # only a path of this site: never an open redirect
        welcome = RedirectResponse(target, status_code=303)
        cookie(welcome, SESSION_COOKIE, token)
        welcome.delete_cookie(LOGIN_COOKIE, path="/")
        with database.writing() as con:
            audit.record(con, user.name, "sign-in", "user", [(user.name, None, None)])
        return welcome

    async def logout(request: Request) -> Response:
        sessions.drop(request.cookies.get(SESSION_COOKIE))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    def filters_of(request: Request) -> work.Filters:
        q = request.query_params
        age = q.get("min_age_days") or None
        try:
            min_age = float(age) if age else None
        except ValueError:
            min_age = None
        return work.Filters(
            recon=q.get("recon") or None,
            break_type=q.get("break_type") or None,
            state=q.get("state", "active") or None,
            owner=q.get("owner") or None,
            min_age_days=min_age,
            golden_project=q.get("golden_project") or None,
            customer=q.get("customer") or None,
            legal_entity=q.get("legal_entity") or None,
            period=q.get("period") or None,
            text=q.get("q") or None,
            sort=q.get("sort", "age"),
        )

    async def breaks_page(request: Request) -> Response:
        filters = filters_of(request)
        try:
            offset = max(0, int(request.query_params.get("offset", "0")))
        except ValueError:
            offset = 0
        with database.cursor() as con:
            found = work.page(con, filters, web.list_size, offset)
        kept = {k: v for k, v in request.query_params.items() if k != "offset" and v}
        return render(
            request,
            "breaks.html",
            page=found,
            filters=filters,
            query=kept,
            offset=offset,
            size=web.list_size,
            states=work.STATES,
            people=enabled(),
            urlencode=urlencode,
        )

    async def break_page(request: Request) -> Response:
        break_id = request.path_params["break_id"]
        with database.cursor() as con:
            item = work.detail(con, break_id, rules)
        rule = rules.get(item["recon"])
        names = (rule.left_name, rule.right_name) if rule else ("left", "right")
        columns = sorted(set(item["left_values"] or {}) | set(item["right_values"] or {}))
        return render(
            request, "break.html", item=item, names=names, columns=columns, states=work.STATES, people=enabled()
        )

    def act(session: Session, con: Connection, ids: list[str], form: Any) -> tuple[str, int]:
        action = str(form.get("action", ""))
        if action == "assign":
            owner = str(form.get("owner", "")).strip() or None
            count = work.assign(con, ids, owner, session.user)
            return f"assigned {count} to {owner or 'nobody'}", count
        if action == "note":
            return f"noted {work.add_note(con, ids, str(form.get('note', '')), session.user)}", len(ids)
        if action == "state":
            count = work.set_state(
                con,
                ids,
                str(form.get("state", "")),
                str(form.get("reason", "")),
                session.user,
                session.who.at_least("approver"),
                web.approve_above,
            )
            return f"{count} set to {form.get('state')}", count
        raise UsageError(f"unknown action {action!r}")

    def assigned_notice(form: Any, ids: list[str], actor: str) -> BackgroundTask | None:
        owner = str(form.get("owner", "")).strip()
        if str(form.get("action")) != "assign" or not owner or not web.notify:
            return None
        title = f"coexist: {len(ids)} break(s) assigned to {owner}"
        body = f"{actor} assigned to {owner}: " + ", ".join(ids[:20])

        def send() -> None:
            with database.writing() as cur:
                notify.send(cur, web.notify, "assigned", owner, title, body)

        return BackgroundTask(send)

    async def break_act(request: Request) -> Response:
        session = need(request, "operator")
        break_id = request.path_params["break_id"]
        form = request.state.form
        with database.writing() as con:
            message, _ = act(session, con, [break_id], form)
        response = back(request, f"/breaks/{break_id}", "ok", message)
        response.background = assigned_notice(form, [break_id], session.user)
        return response

    async def bulk(request: Request) -> Response:
        session = need(request, "operator")
        form = request.state.form
        ids = [str(i) for i in form.getlist("ids")]
        target = "/breaks?" + str(form.get("return", ""))
        if not ids:
            return back(request, target, "error", "select at least one break")
        with database.writing() as con:
            message, _ = act(session, con, ids, form)
        response = back(request, target, "ok", message)
        response.background = assigned_notice(form, ids, session.user)
        return response

    async def review_page(request: Request) -> Response:
        entity = request.query_params.get("entity") or None
        deferred = request.query_params.get("deferred") == "1"
        with database.cursor() as con:
            try:
                pairs = review.review_queue(con, entity, 50, deferred=deferred)
            except NotReady:
                pairs = []
            records = _records_of(con, pairs)
        for pair in pairs:
            pair["evidence"] = orjson.loads(pair["evidence"]) if pair["evidence"] else {}
            pair["a"] = records.get((pair["entity"], pair["record_a"]), {})
            pair["b"] = records.get((pair["entity"], pair["record_b"]), {})
            pair["fields"] = [c for c in dict.fromkeys([*pair["a"], *pair["b"]]) if c != "rid"]
        return render(request, "review.html", pairs=pairs, entities=entities, entity=entity, deferred=deferred)

    async def review_decide(request: Request) -> Response:
        session = need(request, "operator")
        form = request.state.form
        entity = str(form.get("entity", ""))
        a, b = str(form.get("record_a", "")), str(form.get("record_b", ""))
        decision = str(form.get("decision", ""))
        note = str(form.get("note", "")).strip() or None
        if entity not in entities:
            raise UsageError(f"unknown entity {entity!r}")
        with database.writing() as con:
            if decision in ("link", "split"):
                with transaction(con):
                    review.add_override(con, entity, decision, a, b, note, session.user)
                message = f"{decision} {a} and {b}: applied by the next master-data run"
            elif decision == "defer":
                review.defer(con, entity, a, b, 7.0, session.user)
                message = f"{a} and {b} deferred for 7 days"
            else:
                raise UsageError(f"decision must be link, split or defer, not {decision!r}")
        return back(request, f"/review?entity={entity}", "ok", message)

    async def ops_page(request: Request) -> Response:
        with database.cursor() as con:
            view = operations.overview(con, rules, web.unposted_sla_days)
            view["notifications"] = notify.recent(con, 20)
        view["jobs"] = jobs() if jobs else []
        return render(request, "ops.html", ops=view, sla=web.unposted_sla_days)

    async def dead_letters_page(request: Request) -> Response:
        source = request.query_params.get("source") or None
        table = request.query_params.get("table") or None
        with database.cursor() as con:
            rows = operations.dead_letters(con, source, table)
        return render(request, "dead_letters.html", rows=rows, source=source, table=table)

    async def audit_page(request: Request) -> Response:
        actor = request.query_params.get("actor") or None
        subject = request.query_params.get("subject") or None
        with database.cursor() as con:
            rows = audit.trail(con, subject=subject, actor=actor, limit=500)
        return render(request, "audit.html", rows=rows, actor=actor, subject=subject)

    async def users_page(request: Request) -> Response:
        need(request, "admin")
        return render(request, "users.html", rows=people.listing(), changes=people.changes(), roles=users.ROLES)

    async def favicon(request: Request) -> Response:
        return Response(status_code=204)

    async def home(request: Request) -> Response:
        return RedirectResponse("/breaks", status_code=303)

    def failed(request: Request, exc: Exception) -> Response:
        status = 403 if isinstance(exc, Forbidden) else 404 if isinstance(exc, NotReady) else 400
        session = getattr(request.state, "session", None)
        if status == 403:
            return render(request, "message.html", 403, title="Not allowed", message=str(exc))
        if request.method == "POST" and session is not None and status == 400:
            # A form that cannot be done goes back to the page it came from, with the reason.
            target = request.headers.get("referer") or "/breaks"
            host = f"{request.url.scheme}://{request.url.netloc}"
            return back(request, target[len(host) :] if target.startswith(host) else "/breaks", "error", str(exc))
        return render(request, "message.html", status, title="Cannot do that", message=str(exc))

    def busy(request: Request, exc: Exception) -> Response:
        return render(request, "message.html", 503, title="Busy", message=f"the warehouse is busy, try again ({exc})")

    routes = [
        Route("/", home),
        Route("/favicon.ico", favicon),
        Route("/login", login_page, methods=["GET", "POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/breaks", breaks_page),
        Route("/breaks/bulk", bulk, methods=["POST"]),
        Route("/breaks/{break_id}", break_page),
        Route("/breaks/{break_id}/act", break_act, methods=["POST"]),
        Route("/review", review_page),
        Route("/review/decide", review_decide, methods=["POST"]),
        Route("/ops", ops_page),
        Route("/ops/dead-letters", dead_letters_page),
        Route("/audit", audit_page),
        Route("/users", users_page),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    return Starlette(
        routes=routes,
        middleware=[Middleware(Guard)],
        exception_handlers={CoexistError: failed, duckdb.TransactionException: busy},
    )


def _records_of(con: Connection, pairs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """The standardised input records of the pairs (mdm.input_<entity>), by (entity, rid)."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    by_entity: dict[str, set[str]] = {}
    for pair in pairs:
        by_entity.setdefault(pair["entity"], set()).update((pair["record_a"], pair["record_b"]))
    for entity, rids in by_entity.items():
        marks = ", ".join("?" for _ in rids)
        try:
            cur = con.execute(f"SELECT * FROM mdm.{quote('input_' + entity)} WHERE rid IN ({marks})", sorted(rids))
        except duckdb.CatalogException:
            continue
        for record in records(cur):
            found[(entity, str(record["rid"]))] = record
    return found
