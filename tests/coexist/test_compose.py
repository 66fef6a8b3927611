"""docker-compose.yml agrees with what the code expects of PostgreSQL, MariaDB and coexist's config."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cdc.config import MariaDBSource, PostgresSource
from coexist.config import load_settings

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_services_and_health_checks(compose: dict) -> None:
    services = compose["services"]
    assert set(services) == {"psa-postgres", "erp-mariadb", "kafka", "debezium-connect", "coexist"}
    for name, service in services.items():
        assert "healthcheck" in service, name
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)


def test_sources_are_configured_for_cdc(compose: dict) -> None:
    pg = " ".join(compose["services"]["psa-postgres"]["command"])
    assert "wal_level=logical" in pg and "max_replication_slots" in pg
    maria = compose["services"]["erp-mariadb"]["command"]
    for flag in ("--binlog-format=ROW", "--binlog-row-image=FULL", "--binlog-row-metadata=FULL", "--log-bin=mysql-bin"):
        assert flag in maria
    kafka = compose["services"]["kafka"]["environment"]
    assert kafka["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    for service, schema in (("psa-postgres", "psa_schema.sql"), ("erp-mariadb", "erp_schema.sql")):
        mounts = " ".join(compose["services"][service]["volumes"])
        assert f"./sql/{schema}" in mounts and (REPO / "sql" / schema).is_file()


def test_coexist_config_matches_the_services(compose: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    service = compose["services"]["coexist"]
    mount = next(v for v in service["volumes"] if v.endswith(":/etc/coexist/coexist.toml:ro"))
    config = REPO / mount.split(":")[0]
    assert service["environment"]["COEXIST_CONFIG"] == "/etc/coexist/coexist.toml"
    monkeypatch.setenv("PSA_PASSWORD", "x")
    monkeypatch.setenv("ERP_PASSWORD", "y")
    settings = load_settings(config)
    psa, erp = settings.sources["psa"], settings.sources["erp"]
    assert isinstance(psa, PostgresSource) and isinstance(erp, MariaDBSource)
    env = compose["services"]
    assert (psa.host, psa.port, psa.database) == (
        "psa-postgres",
        5432,
        env["psa-postgres"]["environment"]["POSTGRES_DB"],
    )
    assert (erp.host, erp.port, erp.database) == (
        "erp-mariadb",
        3306,
        env["erp-mariadb"]["environment"]["MARIADB_DATABASE"],
    )
    assert psa.password_env in service["environment"] and erp.password_env in service["environment"]
    assert psa.resolved_password() == "x" and erp.resolved_password() == "y"
