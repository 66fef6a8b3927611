"""The configured sources, or the sandbox's when there is no configuration, as readers."""

from __future__ import annotations

from pathlib import Path

from cdc.runner import Reader
from coexist import sandbox
from coexist.config import ConfigError, MariaDBSource, PostgresSource, Settings


def configured_sources(settings: Settings) -> dict[str, PostgresSource | MariaDBSource]:
    if settings.sources:
        return dict(settings.sources)
    state = sandbox.load_state(settings)
    if state is None:
        raise ConfigError("no sources configured and no sandbox found: run `coexist sandbox up` "
                          "or add [sources.NAME] to coexist.toml")
    return dict(sandbox.sandbox_sources(state))


def make_reader(name: str, source: PostgresSource | MariaDBSource, settings: Settings) -> Reader:
    if isinstance(source, MariaDBSource):
        from cdc.binlog import BinlogReader

        return BinlogReader(name, source, batch_size=settings.cdc.batch_size, poll_seconds=settings.cdc.poll_seconds)
    from cdc.debezium import DebeziumPostgresReader

    return DebeziumPostgresReader(name, source, state_dir=Path(settings.data_dir) / "cdc",
                                  batch_size=settings.cdc.batch_size, heap_mb=settings.cdc.jvm_heap_mb)


def readers(settings: Settings, only: list[str] | None = None) -> list[Reader]:
    sources = configured_sources(settings)
    if only:
        unknown = [n for n in only if n not in sources]
        if unknown:
            raise ConfigError(f"unknown source {unknown[0]!r}; configured: {', '.join(sources)}")
        sources = {n: s for n, s in sources.items() if n in only}
    return [make_reader(name, source, settings) for name, source in sources.items()]
