"""The exception workbench, served for real (uvicorn on a loopback port) over a real DuckDB file whose
replica and changelog were written by the real sink, driven by Debian's chromium through Playwright
and by plain HTTP for the security checks."""

from __future__ import annotations

import decimal
import http.server
import json
import os
import re
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from cdc.events import ChangeEvent, position_key
from cdc.sink import Batch, DuckDBSink, Offset
from coexist import tasks
from coexist.config import Settings
from coexist.web.app import Database, create_app
from coexist.web.server import WebServer
from coexist.web.users import Users
from tests.harness import make_data_dir

PAYLOAD = "<script>alert('pwned')</script>' OR 1=1; DROP TABLE recon.break_state;--"
PASSWORD = "correct horse battery"
LINES = {
    "line_id": "INTEGER",
    "project": "VARCHAR",
    "company": "VARCHAR",
    "period": "VARCHAR",
    "amount": "DECIMAL(12,2)",
}
POSTINGS = {
    "posting_id": "INTEGER",
    "line_ref": "INTEGER",
    "project": "VARCHAR",
    "company": "VARCHAR",
    "period": "VARCHAR",
    "amount": "DECIMAL(12,2)",
}
NOTIFY_ENV = "CX_TEST_NOTIFY_URL"


class Capture(http.server.BaseHTTPRequestHandler):
    """A webhook receiver: apprise's json:// posts land in `received`."""

    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        Capture.received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@dataclass
class Bench:
    settings: Settings
    sink: DuckDBSink
    server: WebServer
    position: int = 0
    received: list[dict[str, Any]] = field(default_factory=list)
    lock: Any = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return self.server.url

    def apply(self, source: str, table: str, op: str, row: dict[str, Any], columns: dict[str, str]) -> None:
        self.position += 1
        key_col = next(iter(columns))
        event = ChangeEvent(
            source=source,
            table=table,
            op=op,
            key={key_col: row[key_col]},
            before=row if op in ("u", "d") else None,
            after=None if op == "d" else row,
            position=position_key(1, self.position),
            ts_ms=self.position,
            columns=columns,
        )
        with self.lock:
            self.sink.apply(Batch(events=[event], offsets=[Offset(source, "", event.position)]))

    def reconcile(self) -> None:
        with self.lock:
            cur = self.sink.con.cursor()
            try:
                tasks.reconcile(cur, self.settings, ["ledger"])
            finally:
                cur.close()

    def masterdata(self) -> None:
        with self.lock:
            cur = self.sink.con.cursor()
            try:
                tasks.refresh_masterdata(cur, self.settings, ["vendor"])
            finally:
                cur.close()

    def query(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        cur = self.sink.con.cursor()
        try:
            return cur.execute(sql, params or []).fetchall()
        finally:
            cur.close()


def line(i: int, amount: str, project: str = "P-100") -> dict[str, Any]:
    return {"line_id": i, "project": project, "company": "US01", "period": "2026-10", "amount": decimal.Decimal(amount)}


def posting(i: int, ref: int | None, amount: str, project: str = "P-100") -> dict[str, Any]:
    return {
        "posting_id": i,
        "line_ref": ref,
        "project": project,
        "company": "US01",
        "period": "2026-10",
        "amount": decimal.Decimal(amount),
    }


def settings_for(data_dir: Path, notify_port: int) -> Settings:
    (data_dir / "vendors.csv").write_text(
        "id,name,city\n1,Northwind Traders,Oslo\n2,Northwnd Trading,Oslo\n3,Fjord Shipping,Oslo\n"
    )
    return Settings(
        data_dir=data_dir,
        builtin_reconciliations=False,
        builtin_entities=False,
        reconciliations={
            "ledger": {
                "left": {"table": "replica_psa.lines"},
                "right": {"table": "replica_erp.postings"},
                "left_name": "PSA",
                "right_name": "ERP",
                "keys": [["line_id", "line_ref"]],
                "row_id": ["line_id", "posting_id"],
                "measures": [{"left": "amount", "right": "amount", "abs_tol": 0.01}],
                "context": {
                    "project": ["project", "project"],
                    "period": ["period", "period"],
                    "legal_entity": ["company", "company"],
                },
                "history": {"left": "psa.lines.line_id", "right": "erp.postings.posting_id"},
            }
        },
        entities={
            "vendor": {
                "id_prefix": "VEN",
                "sources": [
                    {
                        "system": "crm",
                        "path": str(data_dir / "vendors.csv"),
                        "id_column": "id",
                        "columns": {"name": "name", "city": "city"},
                    }
                ],
                "standardise": {"name_std": "cx_company(name)", "city_std": "lower(city)"},
                "blocking": [["city_std"]],
                "comparisons": [
                    {
                        "name": "name",
                        "levels": [
                            {"when": "l.name_std = r.name_std", "weight": 8.0, "label": "same"},
                            {
                                "when": "jaro_winkler_similarity(l.name_std, r.name_std) > 0.85",
                                "weight": 3.0,
                                "label": "similar",
                            },
                            {"when": "TRUE", "weight": -6.0, "label": "different"},
                        ],
                    }
                ],
                "thresholds": {"match": 6.0, "review": 2.0},
                "survivorship": [{"field": "name", "rule": "most_complete"}],
            }
        },
        web={
            "port": 0,
            "approve_above": 500.0,
            "notify": [{"url_env": NOTIFY_ENV, "events": ["new_break", "assigned"], "min_amount": 100.0}],
        },
    )


@pytest.fixture(scope="module")
def bench() -> Iterator[Bench]:
    data_dir = make_data_dir("cx-web-")
    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Capture)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    os.environ[NOTIFY_ENV] = f"json://127.0.0.1:{receiver.server_address[1]}/hook?secret-token=s3cr3t"
    settings = settings_for(data_dir, receiver.server_address[1])
    sink = DuckDBSink(settings.warehouse_path)
    people = Users(settings.users_path)
    for name, role in (("ada", "admin"), ("olga", "operator"), ("pat", "approver"), ("vic", "viewer")):
        people.add(name, role, PASSWORD, "test")
    server: WebServer | None = None
    try:
        b = Bench(settings, sink, None)  # type: ignore[arg-type]
        for i in range(1, 9):
            b.apply("psa", "lines", "c", line(i, "100.00"), LINES)
            b.apply("erp", "postings", "c", posting(100 + i, i, "100.00"), POSTINGS)
        b.apply("psa", "lines", "u", line(1, "105.00"), LINES)  # small difference: the operator may accept it
        b.apply("psa", "lines", "u", line(2, "5100.00"), LINES)  # large: only an approver accepts it
        b.apply("psa", "lines", "c", line(9, "40.00"), LINES)  # not posted
        b.apply("erp", "postings", "c", posting(200, None, "75.00"), POSTINGS)  # posted without a line
        b.apply("psa", "lines", "u", line(3, "101.00", PAYLOAD), LINES)
        b.reconcile()
        b.masterdata()
        server = WebServer(create_app(settings, Database(sink.con, b.lock)), settings.web)
        server.start()
        b.server = server
        b.received = Capture.received
        yield b
    finally:
        if server is not None:
            server.stop()
        sink.close()
        receiver.shutdown()
        os.environ.pop(NOTIFY_ENV, None)
        shutil.rmtree(data_dir, ignore_errors=True)


def signed_in(bench: Bench, name: str) -> httpx.Client:
    client = httpx.Client(base_url=bench.url, follow_redirects=False, timeout=10)
    page = client.get("/login")
    token = re.search(r'name="login_token" value="([^"]+)"', page.text)
    assert token, page.text
    done = client.post("/login", data={"name": name, "password": PASSWORD, "login_token": token.group(1)})
    assert done.status_code == 303, done.text
    return client


def csrf_of(client: httpx.Client, path: str = "/breaks") -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', client.get(path).text)
    assert found
    return found.group(1)


def break_id(bench: Bench, key: str) -> str:
    return str(bench.query("SELECT break_id FROM recon.break_state WHERE recon = 'ledger' AND key = ?", [key])[0][0])


PAGES = ["/", "/breaks", "/review", "/ops", "/ops/dead-letters", "/audit", "/users"]
ACTIONS = ["/breaks/bulk", "/review/decide", "/logout"]


def test_without_a_session_pages_redirect_and_actions_are_refused(bench: Bench) -> None:
    one = break_id(bench, "1")
    with httpx.Client(base_url=bench.url, follow_redirects=False, timeout=10) as client:
        for path in [*PAGES, f"/breaks/{one}"]:
            response = client.get(path)
            assert response.status_code == 303 and response.headers["location"].startswith("/login"), path
        for path in [*ACTIONS, f"/breaks/{one}/act"]:
            response = client.post(path, data={"action": "note", "note": "x", "csrf": "guess"})
            assert response.status_code == 401, path
        # A forged session cookie is no session.
        client.cookies.set("coexist_session", "forged")
        assert client.get("/breaks").status_code == 303
    assert bench.query("SELECT count(*) FROM work.notes")[0][0] == 0


def test_roles_and_csrf_guard_every_action(bench: Bench) -> None:
    small, large = break_id(bench, "1"), break_id(bench, "2")
    viewer = signed_in(bench, "vic")
    token = csrf_of(viewer)
    for path, form in (
        (f"/breaks/{small}/act", {"action": "note", "note": "viewer was here"}),
        ("/breaks/bulk", {"action": "assign", "owner": "vic", "ids": small}),
        ("/review/decide", {"entity": "vendor", "record_a": "crm:1", "record_b": "crm:2", "decision": "link"}),
    ):
        assert viewer.post(path, data=form | {"csrf": token}).status_code == 403, path
    assert viewer.get("/users").status_code == 403  # admin only
    operator = signed_in(bench, "olga")
    token = csrf_of(operator)
    # Without the token, or with another session's token, a form post is refused.
    assert operator.post(f"/breaks/{small}/act", data={"action": "note", "note": "no token"}).status_code == 403
    other = csrf_of(viewer)
    assert operator.post(f"/breaks/{small}/act", data={"action": "note", "note": "x", "csrf": other}).status_code == 403
    # An operator may not accept a break above the approval amount; an approver may.
    refused = operator.post(
        f"/breaks/{large}/act", data={"action": "state", "state": "accepted", "reason": "fx", "csrf": token}
    )
    assert refused.status_code == 403 and "approver" in refused.text
    approver = signed_in(bench, "pat")
    done = approver.post(
        f"/breaks/{large}/act",
        data={"action": "state", "state": "accepted", "reason": "fx timing", "csrf": csrf_of(approver)},
    )
    assert done.status_code == 303
    # Accepting needs a reason.
    approver.post(
        f"/breaks/{small}/act", data={"action": "state", "state": "accepted", "reason": " ", "csrf": csrf_of(approver)}
    )
    states = dict(bench.query("SELECT break_id, work_state FROM work.breaks WHERE break_id IN (?, ?)", [small, large]))
    assert states == {small: "open", large: "accepted"}
    assert bench.query("SELECT count(*) FROM work.notes")[0][0] == 0
    audit = bench.query("SELECT actor, action FROM work.audit WHERE subject = ?", [large])
    assert audit == [("pat", "state:accepted")]
    # Signing out ends the session: the same cookie is no longer let in.
    operator.post("/logout", data={"csrf": token})
    assert operator.get("/breaks").status_code == 303


def test_sign_in_is_rate_limited(bench: Bench) -> None:
    limited = bench.settings.model_copy(deep=True)
    limited.web.sign_in_attempts = 3
    server = WebServer(create_app(limited, Database(bench.sink.con, bench.lock)), limited.web)
    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:

            def attempt(password: str) -> httpx.Response:
                token = re.search(r'name="login_token" value="([^"]+)"', client.get("/login").text)
                assert token
                return client.post("/login", data={"name": "olga", "password": password, "login_token": token.group(1)})

            codes = [attempt("wrong password!").status_code for _ in range(3)]
            blocked = attempt(PASSWORD)  # the right password, too late
        assert codes == [401, 401, 401]
        assert blocked.status_code == 429 and "try again" in blocked.text and "Retry-After" in blocked.headers
    finally:
        server.stop()


def test_hostile_values_are_shown_escaped_and_no_secret_reaches_a_page(bench: Bench) -> None:
    admin = signed_in(bench, "ada")
    hostile = break_id(bench, "3")
    pages = {path: admin.get(path) for path in [*PAGES[1:], f"/breaks/{hostile}", f"/breaks?q={PAYLOAD}"]}
    for path, response in pages.items():
        assert response.status_code == 200, path
        text = response.text
        assert "<script>alert" not in text, path
        assert "s3cr3t" not in text and PASSWORD not in text and "argon2" not in text, path
        assert response.headers["content-security-policy"].startswith("default-src 'self'")
        assert response.headers["x-frame-options"] == "DENY"
    assert "&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt;" in pages[f"/breaks/{hostile}"].text
    assert bench.query("SELECT count(*) FROM recon.break_state")[0][0] > 0  # the payload dropped nothing
    cookie = admin.cookies.get("coexist_session")
    assert cookie and all(cookie not in r.text for r in pages.values())


def non_blank(path: Path) -> bool:
    from PIL import Image

    with Image.open(path) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1_000_000) or []
    return path.stat().st_size > 5_000 and len(colours) > 20


@pytest.mark.slow
def test_a_break_worked_in_the_browser_keeps_its_state_through_runs(bench: Bench, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    from coexist.web import notify

    small = break_id(bench, "1")
    dialogs: list[str] = []
    shots = tmp_path / "screens"
    shots.mkdir()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto(f"{bench.url}/breaks")
            expect(page).to_have_url(re.compile(r"/login\?next=%2Fbreaks$"))
            page.get_by_label("Name").fill("olga")
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            expect(page.get_by_role("heading", name=re.compile("Breaks"))).to_be_visible()
            page.screenshot(path=shots / "breaks.png", full_page=True)

            # Filter: the amount mismatches only.
            page.locator('form.filters select[name="break_type"]').select_option("amount_mismatch")
            page.get_by_role("button", name="Filter").click()
            expect(page.locator("table.list tbody tr")).to_have_count(3)
            assert "break_type=amount_mismatch" in page.url

            # Open a break: both sides, the failing check, each row's change history.
            page.get_by_role("link", name="1", exact=True).click()
            expect(page.locator("table.sides")).to_contain_text("105.0")
            expect(page.locator("table.sides")).to_contain_text("100.0")
            history = page.locator("table.history").first
            expect(history.locator("tbody tr")).to_have_count(2)  # inserted, then updated
            expect(history).to_contain_text("opened this break")
            page.screenshot(path=shots / "break.png", full_page=True)

            # Work it: assign, note, accept with a reason.
            page.locator('form:has(input[value="assign"]) select[name="owner"]').select_option("olga")
            page.get_by_role("button", name="Assign").click()
            expect(page.locator(".flash")).to_contain_text("assigned 1 to olga")
            page.get_by_label("Note").fill("Rounding in the PSA export, fixed next release")
            page.get_by_role("button", name="Add note").click()
            page.locator('form:has(input[value="state"]) select[name="state"]').select_option("accepted")
            page.locator('form:has(input[value="state"]) input[name="reason"]').fill("below materiality")
            page.get_by_role("button", name="Set state").click()
            expect(page.locator("dl.facts")).to_contain_text("accepted — below materiality")

            # The next reconciliation run keeps owner, state and note.
            bench.reconcile()
            page.reload()
            facts = page.locator("dl.facts")
            expect(facts).to_contain_text("accepted")
            expect(facts).to_contain_text("olga")
            expect(page.locator("ul.notes")).to_contain_text("Rounding in the PSA export")

            # Fixed at the source: the break closes and keeps its notes; broken again: it reopens.
            bench.apply("psa", "lines", "u", line(1, "100.00"), LINES)
            bench.reconcile()
            page.reload()
            expect(facts).to_contain_text("closed")
            expect(page.locator("ul.notes")).to_contain_text("Rounding in the PSA export")
            bench.apply("psa", "lines", "u", line(1, "107.00"), LINES)
            bench.reconcile()
            page.reload()
            expect(facts).to_contain_text("reopened")
            expect(page.locator("ul.notes")).to_contain_text("Rounding in the PSA export")
            expect(page.locator("table.history").first.locator("tbody tr")).to_have_count(4)

            # A hostile value from a source row is text, never markup.
            page.goto(f"{bench.url}/breaks/{break_id(bench, '3')}")
            expect(page.locator("h1")).to_be_visible()
            expect(page.locator("dl.facts")).to_contain_text(PAYLOAD)

            # Match review: the doubtful pair side by side, linked in the browser.
            page.goto(f"{bench.url}/review")
            pair = page.locator("section.pair").filter(has_text="crm:1")
            expect(pair).to_contain_text("Northwind Traders")
            expect(pair).to_contain_text("Northwnd Trading")
            page.screenshot(path=shots / "review.png", full_page=True)
            pair.get_by_role("button", name="Same: link").click()
            expect(page.locator(".flash")).to_contain_text("applied by the next master-data run")

            page.goto(f"{bench.url}/ops")
            expect(page.get_by_role("heading", name="Capture")).to_be_visible()
            expect(page.locator("body")).to_contain_text("psa")
            page.screenshot(path=shots / "ops.png", full_page=True)

            # A viewer sees everything and can change nothing.
            viewer = browser.new_page()
            viewer.goto(f"{bench.url}/login")
            viewer.get_by_label("Name").fill("vic")
            viewer.get_by_label("Password").fill(PASSWORD)
            viewer.get_by_role("button", name="Sign in").click()
            viewer.goto(f"{bench.url}/breaks/{small}")
            expect(viewer.locator("dl.facts")).to_contain_text("reopened")
            expect(viewer.get_by_role("button", name="Assign")).to_have_count(0)
            expect(viewer.locator("fieldset.bulk")).to_have_count(0)
        finally:
            browser.close()

    assert dialogs == []
    for name in ("breaks", "break", "review", "ops"):
        assert non_blank(shots / f"{name}.png"), name

    # The link decided in the browser makes one golden record at the next (incremental) run.
    bench.masterdata()
    golden = dict(bench.query("SELECT source_id, golden_id FROM mdm.xref WHERE entity = 'vendor'"))
    assert golden["1"] == golden["2"] != golden["3"]
    assert bench.query("SELECT actor, action FROM work.audit WHERE action = 'review:link'") == [("olga", "review:link")]

    # Notifications: the assignment went to the route; new breaks above the route's amount do too.
    assert any("assigned to olga" in m.get("title", "") for m in bench.received)
    bench.apply("psa", "lines", "c", line(10, "900.00"), LINES)
    bench.apply("psa", "lines", "c", line(11, "20.00"), LINES)
    bench.reconcile()
    run_id = bench.query("SELECT max(run_id) FROM recon.runs WHERE recon = 'ledger'")[0][0]
    with bench.lock:
        cur = bench.sink.con.cursor()
        assert notify.new_breaks(cur, bench.settings.web.notify, "ledger", run_id) == 1
        cur.close()
    sent = [m for m in bench.received if "new ledger breaks" in m.get("title", "")]
    assert len(sent) == 1 and "10" in sent[0]["message"] and "11" not in sent[0]["message"].split("(")[0]
    recorded = bench.query("SELECT event, route, delivered FROM work.notifications ORDER BY sent_at")
    assert ("new_break", NOTIFY_ENV, True) in recorded and ("assigned", NOTIFY_ENV, True) in recorded


@pytest.mark.slow
def test_users_web_and_export_from_the_command_line(bench: Bench, tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.harness import cli

    data_dir = make_data_dir("cx-web-cli-")
    try:
        env = {"CX_PW": "a password long enough"}
        assert cli(data_dir, "users", "add", "x<y", "--password-env", "CX_PW", check=False).returncode == 2
        short = cli(
            data_dir, "users", "add", "kim", "--password-env", "CX_SHORT", check=False, env={"CX_SHORT": "short"}
        )
        assert short.returncode == 2 and "at least 10 characters" in short.stderr
        cli(data_dir, "users", "add", "kim", "--role", "approver", "--password-env", "CX_PW", env=env)
        bad_role = cli(data_dir, "users", "set-role", "kim", "boss", check=False)
        assert bad_role.returncode == 2 and "viewer, operator, approver, admin" in bad_role.stderr
        listed = json.loads(cli(data_dir, "users", "list", "--json").stdout)
        assert [(u["name"], u["role"], u["disabled"]) for u in listed] == [("kim", "approver", False)]
        assert (data_dir / "users.sqlite").stat().st_mode & 0o077 == 0  # the owner's only
        assert b"a password long enough" not in (data_dir / "users.sqlite").read_bytes()

        # `coexist web` serves the warehouse on its own; a disabled user cannot sign in.
        proc = subprocess.Popen(
            [sys.executable, "-m", "coexist", "web", "--port", "0"],
            cwd=data_dir,
            env={k: v for k, v in os.environ.items() if not k.startswith("COEXIST_")}
            | {"COEXIST_DATA_DIR": str(data_dir)},
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stderr is not None
            banner = proc.stderr.readline()
            url = re.search(r"(http://127\.0\.0\.1:\d+)/", banner)
            assert url, banner
            with httpx.Client(base_url=url.group(1), timeout=10) as client:

                def sign_in() -> int:
                    token = re.search(r'name="login_token" value="([^"]+)"', client.get("/login").text)
                    assert token
                    form = {"name": "kim", "password": env["CX_PW"], "login_token": token.group(1)}
                    return client.post("/login", data=form, follow_redirects=False).status_code

                assert sign_in() == 303 and client.get("/ops").status_code == 200
                cli(data_dir, "users", "disable", "kim")
                assert client.get("/ops", follow_redirects=False).status_code == 303  # the session ended
                assert sign_in() == 401
        finally:
            proc.terminate()
            assert proc.wait(timeout=20) == 0
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)

    # The work is in the analyst snapshot and exported with the rest; nothing of the users goes with it.
    with bench.lock:
        cur = bench.sink.con.cursor()
        tasks.publish_snapshot(cur, bench.settings)
        cur.close()
    out = tmp_path / "export"
    proc = cli(bench.settings.data_dir, "export", "--snapshot", "--parquet", str(out), "--json", check=False)
    assert proc.returncode == 0, proc.stderr
    files = {f.name for f in out.iterdir()}
    assert {"work.break_work.parquet", "work.notes.parquet", "work.audit.parquet"} <= files
    for f in out.iterdir():
        blob = f.read_bytes()
        assert b"argon2" not in blob and PASSWORD.encode() not in blob and b"s3cr3t" not in blob, f.name


def test_tls_cookies_are_secure_and_plain_http_is_loopback_only(bench: Bench, tmp_path: Path) -> None:
    import subprocess

    from coexist.config import load_settings
    from core.errors import ConfigError

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    secure = bench.settings.model_copy(deep=True)
    secure.web = secure.web.model_validate(secure.web.model_dump() | {"tls_cert": cert, "tls_key": key})
    server = WebServer(create_app(secure, Database(bench.sink.con, bench.lock)), secure.web)
    server.start()
    try:
        assert server.url.startswith("https://")
        with httpx.Client(base_url=server.url, verify=False, timeout=10) as client:
            page = client.get("/login")
            assert "secure" in page.headers["set-cookie"].lower() and "httponly" in page.headers["set-cookie"].lower()
            token = re.search(r'name="login_token" value="([^"]+)"', page.text)
            assert token
            done = client.post(
                "/login",
                data={"name": "olga", "password": PASSWORD, "login_token": token.group(1)},
                follow_redirects=False,
            )
            session_cookie = done.headers["set-cookie"].lower()
            assert done.status_code == 303 and "secure" in session_cookie and "samesite=strict" in session_cookie
    finally:
        server.stop()
    config = tmp_path / "coexist.toml"
    config.write_text('[web]\nhost = "0.0.0.0"\n')
    with pytest.raises(ConfigError, match=r"web.*not loopback: set tls_cert and tls_key"):
        load_settings(config)
