"""The configured sources, or the sandbox's when none is configured, as readers.

Databases are read directly (embedded Debezium, binlog) or, with a Kafka source configured,
through Debezium topics: then `cdc run` consumes Kafka and the databases are read by
`cdc publish` (and still compared by `cdc verify`).
"""

from __future__ import annotations

from pathlib import Path

from cdc.config import DatabaseSource, KafkaSource, MariaDBSource
from cdc.runner import Reader
from coexist.config import Settings
from coexist.sandbox import servers as sandbox
from core.errors import ConfigError


def configured_sources(settings: Settings, required: bool = True) -> dict[str, DatabaseSource]:
    """The database sources: configured ones, else the sandbox's."""
    found = {n: s for n, s in settings.sources.items() if not isinstance(s, KafkaSource)}
    if found:
        return found
    state = sandbox.load_state(settings)
    if state is None:
        if not required:
            return {}
        raise ConfigError(
            "no sources configured and no sandbox found: run `coexist sandbox up` or add [sources.NAME] to coexist.toml"
        )
    return dict(sandbox.sandbox_sources(state))


def kafka_sources(settings: Settings) -> dict[str, KafkaSource]:
    return {n: s for n, s in settings.sources.items() if isinstance(s, KafkaSource)}


def make_reader(name: str, source: DatabaseSource | KafkaSource, settings: Settings, publish: bool = False) -> Reader:
    """A reader for one source; `publish` readers keep their own slot and state (they feed Kafka, not the warehouse)."""
    if isinstance(source, KafkaSource):
        from cdc.kafka import KafkaReader

        return KafkaReader(name, source, batch_size=source.batch_size)
    if isinstance(source, MariaDBSource):
        from cdc.binlog import BinlogReader

        return BinlogReader(
            name,
            source,
            batch_size=settings.cdc.batch_size,
            poll_seconds=settings.cdc.poll_seconds,
            connect_timeout=settings.cdc.connect_timeout_seconds,
            dropped_columns=settings.cdc.dropped_columns,
            dropped_tables=settings.cdc.dropped_tables,
        )
    from cdc.debezium import DebeziumPostgresReader

    if publish:
        source = source.model_copy(update={"slot_name": f"{source.slot_name}_publish"})
    return DebeziumPostgresReader(
        name,
        source,
        state_dir=Path(settings.data_dir) / ("publish" if publish else "cdc"),
        batch_size=settings.cdc.batch_size,
        heap_mb=settings.cdc.jvm_heap_mb,
        dropped_columns=settings.cdc.dropped_columns,
        dropped_tables=settings.cdc.dropped_tables,
    )


def readers(settings: Settings, only: list[str] | None = None, databases_only: bool = False) -> list[Reader]:
    """Readers for `only` (names), else Kafka sources when configured, else databases.

    `databases_only` is `cdc publish`: database readers feeding Kafka.
    """
    kafka = {} if databases_only else kafka_sources(settings)
    databases = configured_sources(settings, required=not kafka)
    every: dict[str, DatabaseSource | KafkaSource] = {**databases, **kafka}
    if only:
        unknown = [n for n in only if n not in every]
        if unknown:
            raise ConfigError(f"unknown source {unknown[0]!r}; configured: {', '.join(every)}")
        chosen = {n: s for n, s in every.items() if n in only}
    else:
        chosen = dict(kafka) if kafka else dict(databases)
    return [make_reader(name, source, settings, publish=databases_only) for name, source in chosen.items()]
