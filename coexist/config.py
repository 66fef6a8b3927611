"""Configuration: one `coexist.toml`, validated by pydantic, overridden by `COEXIST_...` variables.

Lookup order for the file: `--config FILE`, then `COEXIST_CONFIG`, then `./coexist.toml`.
With no file at all, the sources are the local sandbox's databases (see `coexist.sandbox`).
Secrets never live in the file: a source names the environment variable that holds its password.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from masterdata.model import Entity, builtin_entities
from reconcile.rules import Rule

CONFIG_ENV = "COEXIST_CONFIG"
DEFAULT_CONFIG_NAME = "coexist.toml"


class ConfigError(Exception):
    """A configuration problem, phrased for the person who wrote the file."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class _DatabaseSource(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(ge=1, le=65535)
    database: str
    user: str
    password_env: str | None = Field(
        default=None, description="name of the environment variable holding the password"
    )
    # Set only by the sandbox, from its private state file; a user's file must use password_env.
    password: str | None = Field(default=None, exclude=True, repr=False)
    tables: list[str] | None = Field(default=None, description="tables to capture; all when absent")

    def resolved_password(self) -> str | None:
        if self.password is not None:
            return self.password
        if self.password_env is None:
            return None
        secret = os.environ.get(self.password_env)
        if secret is None:
            raise ConfigError(
                f"password_env names {self.password_env!r}, but that environment variable is not set"
            )
        return secret


class PostgresSource(_DatabaseSource):
    kind: Literal["postgres"]
    schema_name: str = Field(default="public", alias="schema")
    slot_name: str = "coexist"
    publication: str = "coexist_pub"

    def url(self) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.database}"


class MariaDBSource(_DatabaseSource):
    kind: Literal["mariadb", "mysql"]
    server_id: int = Field(default=5401, ge=1, le=4294967295, description="unique among binlog clients")

    def url(self) -> str:
        return f"mysql://{self.user}@{self.host}:{self.port}/{self.database}"


class KafkaSource(_Strict):
    """Debezium topics on Kafka, consumed in a consumer group (see `cdc/kafka.py`)."""

    kind: Literal["kafka"]
    bootstrap_servers: str = "127.0.0.1:9092"
    group_id: str = "coexist"
    topics: list[str] | None = Field(default=None, description="topics to consume")
    topic_pattern: str | None = Field(default=None, description="regular expression of topics to consume")
    tables: dict[str, str] = Field(
        default_factory=dict, description="topic -> 'source.table' in the warehouse (replica_<source>.<table>)")
    prefix_sources: dict[str, str] = Field(
        default_factory=dict, description="topic prefix (Debezium topic.prefix) -> source name; default: the prefix")
    session_timeout_ms: int = Field(default=6000, ge=1000)
    heartbeat_interval_ms: int = Field(default=1000, ge=100)
    metadata_max_age_ms: int = Field(
        default=30000, ge=1000, description="how often topic_pattern looks for new topics")
    max_poll_interval_ms: int = Field(
        default=30000, ge=1000, description="also the rebalance timeout: how long a rebalance waits for a member")
    hold_seconds: float = Field(
        default=2.0, gt=0, description="how long one group member keeps the warehouse before letting another in")

    @model_validator(mode="after")
    def _some_topics(self) -> KafkaSource:
        if not self.topics and not self.topic_pattern:
            raise ValueError("set topics (a list) or topic_pattern (a regular expression)")
        if self.topic_pattern:
            try:
                re.compile(self.topic_pattern)
            except re.error as exc:
                raise ValueError(f"topic_pattern is not a regular expression: {exc}") from None
        for topic, target in self.tables.items():
            if target.count(".") != 1:
                raise ValueError(f"tables.{topic}: {target!r} must be 'source.table'")
        return self

    def url(self) -> str:
        return f"kafka://{self.bootstrap_servers}/{self.group_id}"


Source = Annotated[PostgresSource | MariaDBSource | KafkaSource, Field(discriminator="kind")]
DatabaseSource = PostgresSource | MariaDBSource


class PublishSettings(_Strict):
    """`coexist cdc publish`: database readers -> Debezium topics on Kafka."""

    bootstrap_servers: str = "127.0.0.1:9092"
    partitions: int = Field(default=3, ge=1, description="partitions of the topics it creates")
    transactional_id: str = Field(default="coexist-publisher", description="one per publisher process")
    offsets_topic: str = "coexist.publisher.offsets"
    dead_letter_topic: str = "coexist.dead_letter"


class CdcSettings(_Strict):
    batch_size: int = Field(default=5000, ge=1)
    idle_seconds: float = Field(default=3.0, gt=0, description="--until-idle stops after this quiet spell")
    jvm_heap_mb: int = Field(default=256, ge=64)
    poll_seconds: float = Field(default=0.5, gt=0)


class SchedulerSettings(_Strict):
    enabled: bool = True
    timezone: str = "UTC"
    misfire_grace_seconds: int = Field(default=300, ge=1)
    schedules: dict[str, str] = Field(
        default_factory=dict, description="reconciliation name -> cron, overriding the rule's own schedule")

    @field_validator("schedules")
    @classmethod
    def _crons(cls, value: dict[str, str]) -> dict[str, str]:
        from coexist.cron import cron_trigger

        for name, expr in value.items():
            try:
                cron_trigger(expr)
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
        return value


class AlertSettings(_Strict):
    """Thresholds that raise an alert (log line + `ops.alerts` row) when crossed; 0 switches one off."""

    lag_seconds: float = Field(default=300.0, ge=0, description="capture lag of a source above this")
    dead_letters: int = Field(default=1, ge=0, description="new dead letters since the last check, at least")
    new_breaks: int = Field(default=1, ge=0, description="new breaks in one reconciliation run, at least")
    failed_postings: int = Field(
        default=1, ge=0, description="open missing_in_erp breaks of the time reconciliation (unposted time)")
    check_seconds: float = Field(default=15.0, gt=0)


class ServiceSettings(_Strict):
    """`coexist run`: the long-running service."""

    http_host: Literal["127.0.0.1", "localhost", "::1"] = Field(
        default="127.0.0.1", description="health and metrics listen on loopback only")
    http_port: int = Field(default=9464, ge=0, le=65535, description="0 picks a free port")
    masterdata_schedule: str | None = Field(default="*/30 * * * *", description="cron; empty switches it off")
    snapshot_seconds: float = Field(default=60.0, ge=0, description="publish the analyst snapshot this often too")
    snapshot_exclude: list[str] = Field(default_factory=lambda: ["cdc.changelog"],
                                        description="schema.table left out of the analyst snapshot")
    log_format: Literal["json", "text"] = "json"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="COEXIST_", env_nested_delimiter="__", extra="forbid", populate_by_name=True
    )

    data_dir: Path = Path("coexist-data")
    warehouse: Path | None = None
    sources: dict[str, Source] = Field(default_factory=dict)
    cdc: CdcSettings = Field(default_factory=CdcSettings)
    publish: PublishSettings = Field(default_factory=PublishSettings)
    reconciliations: dict[str, Rule] = Field(default_factory=dict)
    builtin_reconciliations: bool = True
    entities: dict[str, Entity] = Field(default_factory=dict)
    builtin_entities: bool = True
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings)
    service: ServiceSettings = Field(default_factory=ServiceSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    config_file: Path | None = Field(default=None, exclude=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment beats the file, which arrives as init kwargs.
        return (env_settings, init_settings)

    @property
    def warehouse_path(self) -> Path:
        return self.warehouse if self.warehouse is not None else self.data_dir / "warehouse.duckdb"

    @property
    def snapshot_path(self) -> Path:
        """The analyst's read-only copy, replaced atomically by the service."""
        return self.data_dir / "snapshot" / "analyst.duckdb"

    @property
    def sandbox_dir(self) -> Path:
        return self.data_dir / "sandbox"

    def all_entities(self) -> dict[str, Entity]:
        """Built-in entity definitions (unless switched off), overridden and extended by the file's, in run order."""
        found = dict(builtin_entities()) if self.builtin_entities else {}
        found.update(self.entities)
        return dict(sorted(found.items(), key=lambda kv: (kv[1].order, kv[0])))

    def all_reconciliations(self) -> dict[str, Rule]:
        """Built-in rules (unless switched off), overridden and extended by the file's."""
        rules: dict[str, Rule] = {}
        if self.builtin_reconciliations:
            raw = tomllib.loads((Path(__file__).with_name("reconciliations.toml")).read_text())
            rules = {name: Rule.model_validate(body) for name, body in raw.items()}
        rules.update(self.reconciliations)
        return rules


def find_config_file(explicit: Path | None = None) -> Path | None:
    if explicit is not None:
        if not explicit.is_file():
            raise ConfigError(f"config file {explicit} does not exist")
        return explicit
    from_env = os.environ.get(CONFIG_ENV)
    if from_env:
        path = Path(from_env)
        if not path.is_file():
            raise ConfigError(f"{CONFIG_ENV}={from_env} does not point at a file")
        return path
    local = Path.cwd() / DEFAULT_CONFIG_NAME
    return local if local.is_file() else None


def _format_errors(origin: str, error: ValidationError) -> str:
    lines = [f"{origin}: {error.error_count()} problem(s)"]
    for item in error.errors():
        loc = ".".join(str(part) for part in item["loc"] if not str(part).startswith("function-"))
        given = item.get("input")
        shown = "" if isinstance(given, dict | list) or given is None else f" (got {given!r})"
        lines.append(f"  {loc or '<top>'}: {item['msg']}{shown}")
    return "\n".join(lines)


def load_settings(config_file: Path | None = None) -> Settings:
    """Read, validate and return the settings; any problem becomes a ConfigError naming the key."""
    path = find_config_file(config_file)
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        bad = [key for key in _walk_keys(data) if key.endswith(".password")]
        if bad:
            raise ConfigError(
                f"{path}: {bad[0]}: passwords are not read from the file; "
                "set password_env to the name of an environment variable"
            )
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(str(path or "environment"), exc)) from None
    settings.config_file = path
    return settings


def _walk_keys(data: Any, prefix: str = "") -> list[str]:
    keys: list[str] = []
    if isinstance(data, dict):
        for key, value in data.items():
            dotted = f"{prefix}.{key}" if prefix else str(key)
            keys.append(dotted)
            keys.extend(_walk_keys(value, dotted))
    return keys
