"""The command line without databases: output formats, stated limits, read-only query, --help, errors."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import duckdb
import pytest

from tests.harness import cli

WIDE = "x" * 150
MARKUP = "[/bold] [red]not red[/red] $x$ \\[escaped]"


@pytest.fixture()
def data_dir(tmp_path: Path) -> Path:
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    con.execute("CREATE TABLE t AS SELECT range AS n, 'row ' || range AS label FROM range(250)")
    con.execute("CREATE TABLE odd (v VARCHAR)")
    con.execute("INSERT INTO odd VALUES (?), (?)", [MARKUP, WIDE])
    con.close()
    return tmp_path


def test_version_and_every_command_has_help_with_an_example(tmp_path: Path) -> None:
    from typer.main import get_command
    from typer.testing import CliRunner

    from coexist.cli import app

    assert cli(tmp_path, "--version").stdout.startswith("coexist ")
    root = get_command(app)
    runner = CliRunner()
    commands = [
        [group, sub] if sub else [group]
        for group, command in root.commands.items()  # type: ignore[attr-defined]
        for sub in (getattr(command, "commands", None) or [None])
    ]
    assert len(commands) >= 23
    for path in commands:
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0 and "Example: coexist" in result.output, f"{' '.join(path)} --help has no example"


def test_data_is_printed_verbatim_and_not_cut_when_piped(data_dir: Path) -> None:
    out = cli(data_dir, "query", "SELECT v FROM odd ORDER BY length(v)").stdout
    assert MARKUP in out and WIDE in out
    rows = json.loads(cli(data_dir, "query", "SELECT v FROM odd ORDER BY length(v)", "--json").stdout)
    assert [r["v"] for r in rows] == [MARKUP, WIDE]
    parsed = list(
        csv.reader(io.StringIO(cli(data_dir, "query", "SELECT v FROM odd ORDER BY length(v)", "--csv").stdout))
    )
    assert parsed == [["v"], [MARKUP], [WIDE]]


def test_row_limit_is_stated_and_zero_means_all(data_dir: Path) -> None:
    cut = cli(data_dir, "query", "SELECT * FROM t ORDER BY n", "--json")
    assert len(json.loads(cut.stdout)) == 100 and "first 100 rows; more exist" in cut.stderr
    whole = cli(data_dir, "query", "SELECT * FROM t ORDER BY n", "--json", "--limit", "0")
    assert len(json.loads(whole.stdout)) == 250 and "more exist" not in whole.stderr
    exact = cli(data_dir, "query", "SELECT * FROM t LIMIT 100", "--json")
    assert len(json.loads(exact.stdout)) == 100 and "more exist" not in exact.stderr


@pytest.mark.parametrize(
    "sql, says",
    [
        ("SELECT 1; SELECT 2", "one statement at a time"),
        ("COPY (SELECT 1) TO '{dir}/leak.csv'", "only queries are allowed"),
        ("SELECT * FROM read_text('{dir}/secret.txt')", "disabled"),
        ("ATTACH '{dir}/other.duckdb' AS o", "only queries are allowed"),
        ("SELECT * FROM read_csv('{dir}/secret.txt')", "disabled"),
        ("SET threads = 1", "only queries are allowed"),
        ("PRAGMA version", "only queries are allowed"),
        ("INSTALL inet", "only queries are allowed"),
        ("CREATE TABLE x (a INT)", "only queries are allowed"),
    ],
)
def test_query_refuses_anything_but_one_read(data_dir: Path, sql: str, says: str) -> None:
    (data_dir / "secret.txt").write_text("password=hunter2")
    proc = cli(data_dir, "query", sql.format(dir=data_dir), check=False)
    assert proc.returncode == 2 and says in proc.stderr and "Traceback" not in proc.stderr
    assert "hunter2" not in proc.stdout
    assert not (data_dir / "leak.csv").exists() and not (data_dir / "other.duckdb").exists()


def test_user_errors_are_one_line_with_exit_code_2(data_dir: Path) -> None:
    for args, says in [
        (("seed", "--scale", "huge"), "--scale must be one of"),
        (("query", "SELECT * FROM nowhere"), "nowhere"),
        (("reconcile", "runs"), "no reconciliation has run yet"),
        (("masterdata", "review"), "master data has not run yet"),
        (("reconcile", "run", "no_such_rule"), "unknown reconciliation 'no_such_rule'"),
        (("query", "SELECT 1", "--json", "--csv"), "choose one of --json and --csv"),
    ]:
        proc = cli(data_dir, *args, check=False)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert says in proc.stderr and "Traceback" not in proc.stderr, (args, proc.stderr)


def test_setup_ddl_prints_its_sql_and_names_a_source_it_cannot_serve(tmp_path: Path) -> None:
    (tmp_path / "coexist.toml").write_text(
        '[sources.pg]\nkind = "postgres"\nport = 5999\ndatabase = "d"\nuser = "u"\nschema = "sales"\n'
        '[sources.my]\nkind = "mariadb"\nport = 5998\ndatabase = "d"\nuser = "u"\n'
    )
    sql = cli(tmp_path, "cdc", "setup-ddl", "--source", "pg", "--print").stdout
    assert "CREATE EVENT TRIGGER coexist_ddl_dropped_sales ON sql_drop" in sql
    assert "schema_name = 'sales'" in sql and "GRANT SELECT ON sales.coexist_ddl TO u;" in sql
    proc = cli(tmp_path, "cdc", "setup-ddl", "--source", "my", check=False)
    assert proc.returncode == 2 and "'my' is not a configured PostgreSQL source" in proc.stderr, proc.stderr


def test_schedule_list_shows_expressions_and_the_service_jobs(tmp_path: Path) -> None:
    jobs = {j["job"]: j for j in json.loads(cli(tmp_path, "schedule", "list", "--json").stdout)}
    assert {"masterdata", "snapshot", "alerts"} <= set(jobs)
    recons = [j for name, j in jobs.items() if name.startswith("reconcile:")]
    assert recons and all(len(j["schedule"].split()) in (5, 6) for j in recons)
    assert jobs["masterdata"]["schedule"] == "*/30 * * * *" and jobs["alerts"]["schedule"].startswith("every ")


@pytest.mark.slow  # waits out the 10 s connect timeout
@pytest.mark.parametrize("kind", ["postgres", "mariadb"])
def test_verify_against_a_port_that_never_answers_says_it_could_not_compare(tmp_path: Path, kind: str) -> None:
    """A server that accepts and then says nothing (not MySQL, not PostgreSQL): an error within the connect
    timeout and exit code 3, not a hang and not "replica differs" (1)."""
    import socket
    import time

    duckdb.connect(str(tmp_path / "warehouse.duckdb")).close()
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    port = silent.getsockname()[1]
    (tmp_path / "coexist.toml").write_text(
        f'[sources.src]\nkind = "{kind}"\nport = {port}\ndatabase = "d"\nuser = "u"\n'
    )
    try:
        started = time.monotonic()
        proc = cli(tmp_path, "cdc", "verify", check=False, timeout=60)
        elapsed = time.monotonic() - started
    finally:
        silent.close()
    assert proc.returncode == 3, (proc.stdout, proc.stderr)
    assert "cannot compare source 'src'" in proc.stderr and "Traceback" not in proc.stderr
    assert elapsed < 30


@pytest.mark.slow  # waits out connect timeouts
def test_capture_from_a_port_that_is_not_mysql_fails_in_time_and_obeys_sigterm(tmp_path: Path) -> None:
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    (tmp_path / "coexist.toml").write_text(
        f'[sources.erp]\nkind = "mariadb"\nport = {silent.getsockname()[1]}\ndatabase = "d"\nuser = "u"\n'
    )
    try:
        started = time.monotonic()
        proc = cli(
            tmp_path,
            "cdc",
            "run",
            "--until-idle",
            check=False,
            timeout=90,
            env={"COEXIST_CDC__CONNECT_TIMEOUT_SECONDS": "2", "COEXIST_CDC__RETRY_SECONDS": "3"},
        )
        assert time.monotonic() - started < 45, "the configured timeouts were not honoured"
        assert proc.returncode == 2 and "erp stopped" in proc.stderr and "cannot connect" in proc.stderr
        assert "Traceback" not in proc.stderr

        env = {k: v for k, v in os.environ.items() if not k.startswith("COEXIST_")} | {
            "COEXIST_DATA_DIR": str(tmp_path)
        }
        running = subprocess.Popen(
            [sys.executable, "-m", "coexist", "cdc", "run"],
            cwd=tmp_path,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        time.sleep(3)  # deliberately in the middle of a handshake that will never complete
        stopped_at = time.monotonic()
        running.send_signal(signal.SIGTERM)
        out, err = running.communicate(timeout=60)
        assert time.monotonic() - stopped_at < 15, "SIGTERM took too long during a hanging handshake"
        assert "Traceback" not in err
    finally:
        silent.close()


SWEEP_RULE = """builtin_reconciliations = false
[reconciliations.r]
left = {{ {left} }}
right = {{ table = "b" }}
keys = [["id", "id"]]
measures = [{{ left = "v", right = "v", abs_tol = {tol} }}]
"""


@pytest.mark.parametrize(
    "config, args, code",
    [
        (SWEEP_RULE.format(left='sql_file = "reconcile/nope.sql"', tol="0"), ["reconcile", "run"], 2),
        (SWEEP_RULE.format(left='table = "a"', tol="-1"), ["reconcile", "run"], 2),
        (SWEEP_RULE.format(left='table = "a"', tol="nan"), ["reconcile", "runs"], 2),
        (SWEEP_RULE.format(left='table = "a"', tol="0"), ["reconcile", "run"], 2),  # tables a, b do not exist
        (
            'builtin_entities = false\n[entities.my-crm]\nid_prefix = "C"\nsources = [{ system = "s", table = "t" }]\n'
            "thresholds = { match = 5.0, review = 2.0 }\n",
            ["masterdata", "run"],
            2,
        ),
        ("", ["seed", "--scale", "huge"], 2),
        ("", ["cdc", "status", "--json"], 0),
        ("", ["export", "--parquet", "out/it's"], 0),
        ("", ["masterdata", "explain", "psa:[/]"], 2),
        ("", ["query", "SELECT '[/bold] x' AS v"], 0),
    ],
)
def test_no_input_from_the_hardening_issue_prints_a_traceback(
    data_dir: Path, config: str, args: list[str], code: int
) -> None:
    from cdc.sink import DuckDBSink

    DuckDBSink(data_dir / "warehouse.duckdb").close()  # cdc.* tables, as after a capture
    con = duckdb.connect(str(data_dir / "warehouse.duckdb"))
    con.execute("DROP TABLE cdc.changelog")  # as in the analyst snapshot
    con.execute("CREATE SCHEMA analytics; CREATE TABLE analytics.quoted AS SELECT 'it''s' AS v")
    con.close()
    (data_dir / "coexist.toml").write_text(config)
    proc = cli(data_dir, *args, check=False)
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    if args[0] == "export":
        assert (data_dir / "out" / "it's" / "analytics.quoted.parquet").is_file()
    if args[0] == "query":
        assert "[/bold] x" in proc.stdout


def test_configured_sql_reads_only_the_files_the_configuration_names(tmp_path: Path) -> None:
    secret = tmp_path / "elsewhere" / "secret.csv"
    secret.parent.mkdir()
    secret.write_text("id,v\n1,hunter2\n")
    named = tmp_path / "inputs" / "b.csv"
    named.parent.mkdir()
    named.write_text("id,v\n1,1\n")
    data_dir = tmp_path / "data"  # the data dir is allowed too: keep the secret outside it
    data_dir.mkdir()
    (data_dir / "coexist.toml").write_text(
        "builtin_reconciliations = false\nbuiltin_entities = false\n[reconciliations.r]\n"
        + f'left = {{ sql = "SELECT * FROM read_csv(\'{secret}\')" }}\nright = {{ path = "{named}" }}\n'
        'keys = [["id", "id"]]\n'
    )
    proc = cli(data_dir, "reconcile", "run", check=False)
    assert proc.returncode == 2 and "Permission Error" in proc.stderr and "hunter2" not in proc.stdout + proc.stderr
    (data_dir / "coexist.toml").write_text(
        "builtin_reconciliations = false\nbuiltin_entities = false\n[reconciliations.r]\n"
        f'left = {{ path = "{named}" }}\nright = {{ path = "{named}" }}\nkeys = [["id", "id"]]\n'
    )
    assert cli(data_dir, "reconcile", "run", "--json").returncode == 0  # files the configuration names are read
