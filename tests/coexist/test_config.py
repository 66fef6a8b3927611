from __future__ import annotations

from pathlib import Path

import pytest

from cdc.config import MariaDBSource, PostgresSource
from coexist.config import load_settings
from core.errors import ConfigError
from tests.harness import cli, make_data_dir


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "coexist.toml"
    path.write_text(text)
    return path


def test_valid_file_with_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(
        tmp_path,
        """
data_dir = "x"
[sources.psa]
kind = "postgres"
port = 5433
database = "psa"
user = "cdc"
password_env = "PSA_PW"
[sources.erp]
kind = "mariadb"
port = 3307
database = "erp"
user = "cdc"
[cdc]
batch_size = 100
""",
    )
    monkeypatch.setenv("COEXIST_CDC__BATCH_SIZE", "42")
    monkeypatch.setenv("PSA_PW", "s3cret")
    settings = load_settings(path)
    assert settings.cdc.batch_size == 42
    assert isinstance(settings.sources["psa"], PostgresSource)
    assert isinstance(settings.sources["erp"], MariaDBSource)
    assert settings.sources["psa"].resolved_password() == "s3cret"
    assert "s3cret" not in repr(settings)
    assert settings.warehouse_path == Path("x/warehouse.duckdb")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[sources.psa]\nkind='postgres'\nport='abc'\ndatabase='p'\nuser='u'\n", "sources.psa.postgres.port"),
        ("[sources.psa]\nkind='oracle9'\nport=1\ndatabase='p'\nuser='u'\n", "sources.psa"),
        ("[cdc]\nbatch_sise = 5\n", "cdc.batch_sise: Extra inputs are not permitted"),
        ("[cdc]\nbatch_size = 0\n", "cdc.batch_size: Input should be greater than or equal to 1"),
        ("[sources.erp]\nkind='mariadb'\nport=99999\ndatabase='e'\nuser='u'\n", "sources.erp.mariadb.port"),
        (
            "[sources.erp]\nkind='mariadb'\nport=3306\ndatabase='e'\nuser='u'\npassword='x'\n",
            "sources.erp.password: passwords are not read from the file",
        ),
        ("data_dir = [unclosed\n", "not valid TOML"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text))
    assert expected in str(info.value)


def test_missing_password_variable_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOPE_PW", raising=False)
    settings = load_settings(
        write(tmp_path, "[sources.psa]\nkind='postgres'\nport=5\ndatabase='p'\nuser='u'\npassword_env='NOPE_PW'\n")
    )
    with pytest.raises(ConfigError, match="NOPE_PW"):
        settings.sources["psa"].resolved_password()


def test_cli_prints_error_without_traceback() -> None:
    data_dir = make_data_dir()
    (data_dir / "coexist.toml").write_text("[cdc]\nbatch_size = 'lots'\n")
    proc = cli(data_dir, "sandbox", "status", check=False)
    assert proc.returncode == 2
    assert "cdc.batch_size" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_config_flag_and_env_variable(tmp_path: Path) -> None:
    data_dir = make_data_dir()
    other = tmp_path / "elsewhere.toml"
    other.write_text("[cdc]\nidle_seconds = -1\n")
    proc = cli(data_dir, "--config", str(other), "sandbox", "status", check=False)
    assert proc.returncode == 2 and "cdc.idle_seconds" in proc.stderr
    proc = cli(data_dir, "sandbox", "status", check=False, env={"COEXIST_CONFIG": str(other)})
    assert proc.returncode == 2 and "cdc.idle_seconds" in proc.stderr
    proc = cli(data_dir, "--config", str(tmp_path / "missing.toml"), "sandbox", "status", check=False)
    assert proc.returncode == 2 and "does not exist" in proc.stderr


RULE = (
    '[reconciliations.r]\nleft = {{ table = "a" }}\nright = {{ table = "b" }}\nkeys = [["id", "id"]]\n'
    'measures = [{{ left = "v", right = "v", abs_tol = {tol} }}]\n'
)


@pytest.mark.parametrize(
    "body,key",
    [
        ('[scheduler.schedules]\ntime = "every minute"\n', "scheduler.schedules"),
        ('[sources.bus]\nkind = "kafka"\n', "sources.bus.kafka"),
        ('[sources.bus]\nkind = "kafka"\ntopic_pattern = "(unclosed"\n', "sources.bus.kafka"),
        ('[sources.bus]\nkind = "kafka"\ntopics = ["a.b.c"]\ntables = {"a.b.c" = "no_dot"}\n', "sources.bus.kafka"),
        ('[service]\nhttp_host = "0.0.0.0"\n', "service.http_host"),
        ("[alerts]\nlag_seconds = -1\n", "alerts.lag_seconds"),
        (RULE.format(tol="-0.5"), "reconciliations.r.measures.0.abs_tol: Input should be greater than or equal to 0"),
        (RULE.format(tol="nan"), "reconciliations.r.measures.0.abs_tol: Input should be a finite number"),
        (RULE.format(tol="inf"), "reconciliations.r.measures.0.abs_tol: Input should be a finite number"),
        (
            RULE.replace("[reconciliations.r]", "[reconciliations.my-rule]").format(tol="1"),
            "reconciliations: Value error, 'my-rule' is not a valid name",
        ),
        (
            '[reconciliations.r]\nleft = { sql_file = "reconcile/nope.sql" }\nright = { table = "b" }\n'
            'keys = [["id", "id"]]\n',
            "reconciliations: Value error, r.left.sql_file: no file",
        ),
        (
            '[entities.bad-name]\nid_prefix = "B"\nsources = [{ system = "crm", table = "t" }]\n'
            "thresholds = { match = 5.0, review = 2.0 }\n",
            "entities: Value error, 'bad-name' is not a valid name",
        ),
        (
            '[sources."psa.x"]\nkind = "postgres"\nport = 1\ndatabase = "p"\nuser = "u"\n',
            "sources: Value error, 'psa.x' is not a valid name",
        ),
        ('[duckdb]\nmemory_limit = "lots"\n', "duckdb.memory_limit"),
        ("[duckdb]\nthreads = 0\n", "duckdb.threads"),
    ],
)
def test_service_and_kafka_config_errors_name_the_key(tmp_path: Path, body: str, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, body))
    assert key in str(err.value), str(err.value)


def test_six_field_cron_and_schedule_override(tmp_path: Path) -> None:
    from coexist.service.scheduler import build_scheduler, register_reconciliations

    settings = load_settings(
        write(tmp_path, f'data_dir = "{tmp_path}"\n[scheduler.schedules]\ntime = "*/5 * * * * *"\n')
    )
    scheduler = build_scheduler(settings)
    scheduler.start(paused=True)
    try:
        register_reconciliations(scheduler, settings)
        trigger = str(scheduler.get_job("reconcile:time").trigger)
        assert "second='*/5'" in trigger
    finally:
        scheduler.shutdown(wait=False)
    bad = load_settings(write(tmp_path, f'data_dir = "{tmp_path}"\n[scheduler.schedules]\nnope = "* * * * *"\n'))
    scheduler = build_scheduler(bad)
    scheduler.start(paused=True)
    try:
        with pytest.raises(ConfigError, match="scheduler.schedules.nope"):
            register_reconciliations(scheduler, bad)
    finally:
        scheduler.shutdown(wait=False)
