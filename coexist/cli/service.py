"""`coexist run` (the service) and `coexist schedule list`."""

from __future__ import annotations

from typing import Annotated, Literal

import typer

from coexist.cli.common import exit_process, settings
from coexist.cli.output import CsvOpt, JsonOpt, Output
from core.errors import UsageError

schedule_app = typer.Typer(help="The job schedule of `coexist run`.", no_args_is_help=True)


def run(
    http_port: Annotated[int | None, typer.Option(help="health/metrics port on loopback (0 = any free port)")] = None,
    log_format: Annotated[str | None, typer.Option(help="json or text")] = None,
) -> None:
    """Run the service: capture every source continuously and run the scheduled jobs.

    Reconciliations on their cron schedules, the master-data refresh, the analyst snapshot
    (`<data_dir>/snapshot/analyst.duckdb`) and alert checks; GET /healthz and /metrics on
    loopback. Stops cleanly on Ctrl-C or SIGTERM.

    Example: coexist run --http-port 9464
    """
    from coexist.service import logs
    from coexist.service.service import Service

    cfg = settings()
    if http_port is not None:
        cfg.service.http_port = http_port
    if log_format is not None:
        if log_format not in ("json", "text"):
            raise UsageError(f"--log-format must be json or text, not {log_format!r}")
        fmt: Literal["json", "text"] = "json" if log_format == "json" else "text"
        cfg.service.log_format = fmt
    logs.setup(cfg.service.log_format)
    try:
        service = Service(cfg)
    except OSError as exc:
        raise UsageError(f"cannot listen on {cfg.service.http_host}:{cfg.service.http_port}: {exc}") from None
    exit_process(service.run())


@schedule_app.command("list")
def schedule_list(as_json: JsonOpt = False, as_csv: CsvOpt = False) -> None:
    """List every job `coexist run` schedules: its cron expression or interval, and its next run.

    Example: coexist schedule list --json
    """
    from coexist.service.scheduler import list_jobs

    Output(as_json, as_csv).rows(list_jobs(settings()), ["job", "schedule", "runs", "next_run"], title="schedule")
