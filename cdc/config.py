"""Configuration of capture: the sources (PostgreSQL, MariaDB/MySQL, Kafka), batching, the Kafka publisher.

The application (`coexist.config`) composes these into its settings; nothing here reads files.
"""

from __future__ import annotations

import os
import re
from typing import Annotated, Any, Literal

import psycopg
import pymysql
from pydantic import Field, model_validator

from core.errors import ConfigError, SourceRefused
from core.models import Strict

# Login refusals: retrying them only hides the cause (access denied, unknown database, no such role).
MYSQL_REFUSALS = {1044, 1045, 1049, 1698}
PG_REFUSALS = ("password authentication failed", "no pg_hba.conf entry", "does not exist", "permission denied")


class _DatabaseSource(Strict):
    host: str = "127.0.0.1"
    port: int = Field(ge=1, le=65535)
    database: str
    user: str
    password_env: str | None = Field(default=None, description="name of the environment variable holding the password")
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
            raise ConfigError(f"password_env names {self.password_env!r}, but that environment variable is not set")
        return secret


class PostgresSource(_DatabaseSource):
    kind: Literal["postgres"]
    schema_name: str = Field(default="public", alias="schema")
    slot_name: str = "coexist"
    publication: str = "coexist_pub"
    ddl_table: str = Field(
        default="coexist_ddl",
        description="log table of the DDL event triggers (`coexist cdc setup-ddl`): read, never replicated",
    )

    def url(self) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.database}"

    def connect(self, timeout: int = 10, autocommit: bool = False) -> psycopg.Connection[Any]:
        """A plain SQL connection to this source (the one place that turns the config into one).

        A refused login raises SourceRefused (retrying will not help); anything else stays psycopg's error.
        """
        try:
            return psycopg.connect(
                host=self.host,
                port=self.port,
                dbname=self.database,
                user=self.user,
                password=self.resolved_password(),
                connect_timeout=timeout,
                autocommit=autocommit,
            )
        except psycopg.OperationalError as exc:
            if any(marker in str(exc) for marker in PG_REFUSALS):
                raise SourceRefused(f"{self.url()} refused the login: {str(exc).strip()}") from None
            raise


class MariaDBSource(_DatabaseSource):
    kind: Literal["mariadb", "mysql"]
    server_id: int = Field(default=5401, ge=1, le=4294967295, description="unique among binlog clients")

    def url(self) -> str:
        return f"mysql://{self.user}@{self.host}:{self.port}/{self.database}"

    def connect(self, timeout: int = 10, autocommit: bool = True, with_database: bool = True) -> pymysql.Connection:
        """A plain SQL connection to this source (the one place that turns the config into one).

        The handshake is bounded by `timeout` too (a port that is not MySQL would otherwise hang for ever);
        a refused login raises SourceRefused.
        """
        return mysql_connect(
            timeout,
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.resolved_password() or "",
            database=self.database if with_database else None,
            charset="utf8mb4",
            autocommit=autocommit,
        )


def mysql_connect(timeout: float, **kwargs: Any) -> pymysql.Connection:
    """pymysql.connect with connect and handshake bounded by `timeout`, reads unbounded afterwards."""
    kwargs.pop("read_timeout", None)
    kwargs["connect_timeout"] = timeout
    try:
        conn = pymysql.connect(read_timeout=timeout, **kwargs)
    except pymysql.err.OperationalError as exc:
        if exc.args and exc.args[0] in MYSQL_REFUSALS:
            raise SourceRefused(
                f"mysql://{kwargs.get('user')}@{kwargs.get('host')}:{kwargs.get('port')} refused the "
                f"login: {exc.args[-1]}"
            ) from None
        raise
    # pymysql keeps one read timeout for the handshake and every later read; long reads must not time out.
    conn._read_timeout = None
    if conn._sock is not None:
        conn._sock.settimeout(None)
    return conn


class KafkaSource(Strict):
    """Debezium topics on Kafka, consumed in a consumer group (see `cdc/kafka.py`)."""

    kind: Literal["kafka"]
    bootstrap_servers: str = "127.0.0.1:9092"
    group_id: str = "coexist"
    topics: list[str] | None = Field(default=None, description="topics to consume")
    topic_pattern: str | None = Field(default=None, description="regular expression of topics to consume")
    tables: dict[str, str] = Field(
        default_factory=dict, description="topic -> 'source.table' in the warehouse (replica_<source>.<table>)"
    )
    prefix_sources: dict[str, str] = Field(
        default_factory=dict, description="topic prefix (Debezium topic.prefix) -> source name; default: the prefix"
    )
    batch_size: int = Field(
        default=20000,
        ge=1,
        description="events per batch, each one warehouse commit (cdc.batch_size is the database readers'); "
        "a batch is bounded by fetch_max_bytes too",
    )
    client: Literal["kafka-python", "confluent-kafka"] = Field(
        default="kafka-python",
        description="consumer library; confluent-kafka (librdkafka) reads faster, but took a killed group "
        "member's partitions over more slowly in the tests (see the README)",
    )
    session_timeout_ms: int = Field(default=6000, ge=1000)
    heartbeat_interval_ms: int = Field(default=1000, ge=100)
    metadata_max_age_ms: int = Field(default=30000, ge=1000, description="how often topic_pattern looks for new topics")
    fetch_max_bytes: int = Field(
        default=64 << 20,
        ge=1 << 20,
        description="bytes one poll may bring (a batch is bounded by this and by batch_size events); "
        "a partition brings at most a quarter of it",
    )
    max_poll_interval_ms: int = Field(
        default=30000, ge=1000, description="also the rebalance timeout: how long a rebalance waits for a member"
    )
    hold_seconds: float = Field(
        default=2.0, gt=0, description="how long one group member keeps the warehouse before letting another in"
    )

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


class PublishSettings(Strict):
    """`coexist cdc publish`: database readers -> Debezium topics on Kafka."""

    bootstrap_servers: str = "127.0.0.1:9092"
    partitions: int = Field(default=3, ge=1, description="partitions of the topics it creates")
    transactional_id: str = Field(default="coexist-publisher", description="one per publisher process")
    offsets_topic: str = "coexist.publisher.offsets"
    dead_letter_topic: str = "coexist.dead_letter"
    client: Literal["kafka-python", "confluent-kafka"] = Field(
        default="confluent-kafka",
        description="producer library; confluent-kafka (librdkafka) publishes about 10x faster "
        "(benchmarks/bench_kafka.py); both partition keys with murmur2, as the Java client does",
    )


class CdcSettings(Strict):
    batch_size: int = Field(default=5000, ge=1)
    idle_seconds: float = Field(default=3.0, gt=0, description="--until-idle stops after this quiet spell")
    jvm_heap_mb: int = Field(default=256, ge=64)
    poll_seconds: float = Field(default=0.5, gt=0)
    connect_timeout_seconds: float = Field(
        default=30.0, gt=0, description="how long one source connection (handshake included) is tried before failing"
    )
    retry_seconds: float = Field(
        default=120.0, gt=0, description="`cdc run`: how long a lost source is retried before capture stops"
    )
    dropped_columns: Literal["drop", "keep"] = Field(
        default="drop", description="a column dropped at the source: drop it from the replica, or keep its last values"
    )
    dropped_tables: Literal["archive", "drop"] = Field(
        default="archive", description="a table dropped at the source: move its replica to replica_<source>_archive"
    )
