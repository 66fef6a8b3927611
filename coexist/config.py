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
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from cdc.config import CdcSettings, PublishSettings, Source
from core.cron import cron_trigger
from core.errors import ConfigError
from core.models import Strict
from core.warehouse import Limits, configure
from masterdata import standardise
from masterdata.model import Entity, builtin_entities
from masterdata.standardise import Vocabulary
from reconcile.engine import SQL_DIR
from reconcile.rules import Rule, builtin_rules, missing_files

CONFIG_ENV = "COEXIST_CONFIG"
DEFAULT_CONFIG_NAME = "coexist.toml"
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class SchedulerSettings(Strict):
    enabled: bool = True
    timezone: str = "UTC"
    misfire_grace_seconds: int = Field(default=300, ge=1)
    schedules: dict[str, str] = Field(
        default_factory=dict, description="reconciliation name -> cron, overriding the rule's own schedule"
    )

    @field_validator("schedules")
    @classmethod
    def _crons(cls, value: dict[str, str]) -> dict[str, str]:
        for name, expr in value.items():
            try:
                cron_trigger(expr)
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
        return value


class AlertSettings(Strict):
    """Thresholds that raise an alert (log line + `ops.alerts` row) when crossed; 0 switches one off."""

    lag_seconds: float = Field(default=300.0, ge=0, description="capture lag of a source above this")
    dead_letters: int = Field(default=1, ge=0, description="new dead letters since the last check, at least")
    new_breaks: int = Field(default=1, ge=0, description="new breaks in one reconciliation run, at least")
    failed_postings: int = Field(
        default=1, ge=0, description="open missing_in_erp breaks of the time reconciliation (unposted time)"
    )
    check_seconds: float = Field(default=15.0, gt=0)


class DuckDBSettings(Strict):
    """What the warehouse's writing connections may use. Beyond the memory limit DuckDB spills
    joins and aggregates to the temp directory instead of failing or growing."""

    memory_limit: str = Field(
        default="1GB",
        pattern=r"^\s*\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)\s*$",
        description="e.g. 1GB, 1536MB, 4GiB",
    )
    temp_directory: Path | None = Field(default=None, description="spill directory; <data_dir>/tmp when unset")
    threads: int | None = Field(default=None, ge=1, description="worker threads; all cores when unset")
    checkpoint_threshold: str | None = Field(
        default=None,
        pattern=r"^\s*\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)\s*$",
        description="write-ahead log size that triggers a checkpoint; unset: DuckDB's 16MB",
    )

    def limits(self, data_dir: Path) -> Limits:
        return Limits(
            self.memory_limit.strip(),
            self.temp_directory or data_dir / "tmp",
            self.threads,
            self.checkpoint_threshold.strip() if self.checkpoint_threshold else None,
        )


class ServiceSettings(Strict):
    """`coexist run`: the long-running service."""

    http_host: Literal["127.0.0.1", "localhost", "::1"] = Field(
        default="127.0.0.1", description="health and metrics listen on loopback only"
    )
    http_port: int = Field(default=9464, ge=0, le=65535, description="0 picks a free port")
    masterdata_schedule: str | None = Field(default="*/30 * * * *", description="cron; empty switches it off")
    snapshot_seconds: float = Field(default=60.0, ge=0, description="publish the analyst snapshot this often too")
    snapshot_exclude: list[str] = Field(
        default_factory=lambda: ["cdc.changelog"], description="schema.table left out of the analyst snapshot"
    )
    log_format: Literal["json", "text"] = "json"


LOOPBACK = ("127.0.0.1", "localhost", "::1")
Event = Literal["new_break", "assigned", "alert"]
EVENTS: tuple[Event, ...] = ("new_break", "assigned", "alert")


class NotifyRoute(Strict):
    """Where notifications go, through apprise (mailto://, slack://, msteams://, json:// webhooks ...).

    The URL carries credentials, so the file names the environment variable that holds it."""

    url_env: str = Field(description="environment variable holding one or more apprise URLs (space-separated)")
    events: list[Event] = Field(default_factory=lambda: list(EVENTS))
    min_amount: float = Field(default=0.0, ge=0, description="new_break: only breaks whose difference is at least this")


class WebSettings(Strict):
    """The exception workbench: served by `coexist run` and by `coexist web`."""

    enabled: bool = Field(default=True, description="`coexist run` serves the workbench too")
    host: str = Field(default="127.0.0.1", description="loopback by default; any other address needs TLS")
    port: int = Field(default=8470, ge=0, le=65535, description="0 picks a free port")
    tls_cert: Path | None = None
    tls_key: Path | None = None
    approve_above: float = Field(
        default=1000.0, ge=0, description="accepting a break whose difference is above this needs an approver"
    )
    session_minutes: int = Field(default=480, ge=1, description="a session ends after this long without a request")
    sign_in_attempts: int = Field(default=5, ge=1, description="failed sign-ins per address and name per window")
    sign_in_window_seconds: int = Field(default=300, ge=1)
    unposted_sla_days: float = Field(default=3.0, ge=0, description="approved time unposted longer than this is late")
    list_size: int = Field(default=100, ge=10, le=1000, description="breaks per page")
    notify: list[NotifyRoute] = Field(default_factory=list)

    @model_validator(mode="after")
    def _tls_off_loopback(self) -> WebSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        if self.host not in LOOPBACK and self.tls_cert is None:
            raise ValueError(f"host {self.host!r} is not loopback: set tls_cert and tls_key (sign-in over plain HTTP)")
        return self

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None


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
    web: WebSettings = Field(default_factory=WebSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    duckdb: DuckDBSettings = Field(default_factory=DuckDBSettings)
    standardise: Vocabulary = Field(default_factory=Vocabulary)
    config_file: Path | None = Field(default=None, exclude=True)

    @field_validator("sources", "reconciliations", "entities")
    @classmethod
    def _names_are_identifiers(cls, value: dict[str, Any]) -> dict[str, Any]:
        """Names become table, schema and run names in SQL: letters, digits and underscores only."""
        for name in value:
            if not IDENTIFIER.fullmatch(name):
                raise ValueError(f"{name!r} is not a valid name: use letters, digits and _ (not starting with a digit)")
        return value

    @field_validator("reconciliations")
    @classmethod
    def _sql_files_exist(cls, value: dict[str, Rule]) -> dict[str, Rule]:
        problems = [f"{name}.{problem}" for name, rule in value.items() for problem in missing_files(rule, SQL_DIR)]
        if problems:
            raise ValueError("; ".join(problems))
        return value

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
    def users_path(self) -> Path:
        """The workbench's users (`coexist users`), outside the warehouse."""
        return self.data_dir / "users.sqlite"

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
        rules: dict[str, Rule] = dict(builtin_rules()) if self.builtin_reconciliations else {}
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
    configure(settings.duckdb.limits(settings.data_dir))
    standardise.configure(settings.standardise)
    return settings


def _walk_keys(data: Any, prefix: str = "") -> list[str]:
    keys: list[str] = []
    if isinstance(data, dict):
        for key, value in data.items():
            dotted = f"{prefix}.{key}" if prefix else str(key)
            keys.append(dotted)
            keys.extend(_walk_keys(value, dotted))
    return keys
