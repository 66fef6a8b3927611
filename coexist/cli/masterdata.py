"""`coexist masterdata ...`: golden records, the review queue, overrides, explanations."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from coexist import tasks
from coexist.cli.common import cli_actor, read_warehouse, settings, write_warehouse
from coexist.cli.output import CsvOpt, JsonOpt, Output
from core.errors import NotReady, UsageError
from core.warehouse import transaction
from masterdata import review

app = typer.Typer(help="Master data: golden records for customers, projects and resources.", no_args_is_help=True)


@app.command("run")
def run(
    entity: Annotated[list[str] | None, typer.Option("--entity", "-e", help="only this entity (repeatable)")] = None,
    incremental: Annotated[bool, typer.Option(help="re-resolve only records changed since the last run")] = False,
    as_json: JsonOpt = False,
    as_csv: CsvOpt = False,
) -> None:
    """Resolve entities into golden records (customers first: projects use their golden IDs).

    Example: coexist masterdata run --incremental
    """
    out = Output(as_json, as_csv)
    con = write_warehouse()
    try:
        results = tasks.refresh_masterdata(con, settings(), entity, incremental=incremental)
    finally:
        con.close()
    out.rows(
        [
            {
                "entity": r.entity,
                "mode": r.mode,
                "records": r.records,
                "changed": r.changed_records,
                "links": r.links,
                "reviews": r.reviews,
                "golden records": r.clusters,
                "touched": r.touched_clusters,
                "new IDs": r.new_ids,
                "seconds": round(r.seconds, 2),
            }
            for r in results
        ],
        title="master data",
    )


@app.command("train")
def train_cmd(
    entity: Annotated[list[str] | None, typer.Option("--entity", "-e", help="only this entity (repeatable)")] = None,
    from_labels: Annotated[
        bool, typer.Option("--from-labels", help="m from the pairs linked by hand (overrides), not EM")
    ] = False,
    as_json: JsonOpt = False,
    as_csv: CsvOpt = False,
) -> None:
    """Learn comparison weights from the records (u from random pairs, m by EM over the blocked pairs).

    Runs score with the newest model trained for the entity's current definition; a level's weight is
    log2(m/u), and the thresholds become match probabilities (`training.match_probability`).

    Example: coexist masterdata train --entity customer
    """
    out = Output(as_json, as_csv)
    con = write_warehouse()
    try:
        trained = tasks.train_masterdata(con, settings(), entity, from_labels=from_labels)
    finally:
        con.close()
    rows: list[dict[str, Any]] = []
    for spec, model in trained:
        for comparison in spec.comparisons:
            labels = [lv.label for lv in comparison.levels] + ["else"]
            for k, label in enumerate(labels):
                m, u = model.m[comparison.name][k], model.u[comparison.name][k]
                rows.append(
                    {
                        "entity": model.entity,
                        "comparison": comparison.name,
                        "level": label,
                        "m": _probability(m, out.human),
                        "u": _probability(u, out.human),
                        "weight": round(model.weight(comparison.name, k), 3),
                    }
                )
        out.say(
            f"{model.entity}: model {model.version}, λ = {model.prior:.5f} of {model.pairs:,} candidate pairs "
            f"({model.iterations} EM iterations), u from {model.random_pairs:,} random pairs"
        )
    out.rows(rows, title="learned weights")


def _probability(p: float | None, human: bool) -> float | str | None:
    """Probabilities span orders of magnitude: three significant digits for people, six decimals otherwise."""
    if p is None:
        return None
    return f"{p:.3g}" if human else round(p, 6)


@app.command("check")
def check_cmd(
    entity: Annotated[list[str] | None, typer.Option("--entity", "-e", help="only this entity (repeatable)")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Compile every entity's SQL (sources, standardisation, rules, comparisons, survivorship) against the real
    columns, writing nothing; problems are named by configuration key. Every run does this first.

    Example: coexist masterdata check --entity customer
    """
    out = Output(as_json)
    con = write_warehouse()
    try:
        tasks.check_entities(con, settings(), entity)
    finally:
        con.close()
    chosen = entity or list(settings().all_entities())
    out.document({"ok": True, "entities": chosen}, lambda: out.say(f"ok: {', '.join(chosen)}"))


@app.command("review")
def review_cmd(
    entity: Annotated[str | None, typer.Option("--entity", "-e", help="only this entity")] = None,
    limit: Annotated[int, typer.Option(help="pairs to show (0 for all)")] = 30,
    as_json: JsonOpt = False,
    as_csv: CsvOpt = False,
) -> None:
    """Show pairs between the review and match thresholds, with the evidence per field.

    Decide with `coexist masterdata override link|split A B`.

    Example: coexist masterdata review --entity customer
    """
    out = Output(as_json, as_csv)
    con = read_warehouse()
    try:
        rows = review.review_queue(con, entity, limit + 1 if limit else None)
    finally:
        con.close()
    more = bool(limit) and len(rows) > limit
    shown = rows[:limit] if limit else rows
    out.rows(
        shown,
        ["entity", "record_a", "record_b", "score", "evidence"],
        title=f"review queue ({len(shown)} shown)",
        more=more,
        limit=limit,
    )


@app.command("override")
def override(
    action: Annotated[str, typer.Argument(help="link | split")],
    record_a: Annotated[str, typer.Argument(help="SYSTEM:ID, e.g. psa:12")],
    record_b: Annotated[str, typer.Argument(help="SYSTEM:ID, e.g. erp:C010044")],
    entity: Annotated[str, typer.Option("--entity", "-e", help="entity of both records")] = "customer",
    note: Annotated[str | None, typer.Option(help="why")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Record a manual decision that every later run honours, and re-resolve the entity.

    Example: coexist masterdata override split psa:12 erp:C010044 --entity customer --note "two companies"
    """
    out = Output(as_json)
    entities = settings().all_entities()
    if entity not in entities:
        raise UsageError(f"unknown entity {entity!r}; defined: {', '.join(entities)}")
    con = write_warehouse()
    try:
        with transaction(con):
            review.add_override(con, entity, action, record_a, record_b, note, cli_actor())
        result = tasks.refresh_masterdata(con, settings(), [entity])[0]
    finally:
        con.close()
    out.record(
        {
            "recorded": action,
            "record_a": record_a,
            "record_b": record_b,
            "entity": entity,
            "golden_records": result.clusters,
        }
    )


@app.command("decide")
def decide(
    file: Annotated[Path, typer.Argument(help="CSV with columns action (link|split), record_a, record_b[, note]")],
    entity: Annotated[str, typer.Option("--entity", "-e", help="entity of the records")] = "customer",
    as_json: JsonOpt = False,
) -> None:
    """Record a batch of review decisions at once, then re-resolve only the records they touch.

    Example: coexist masterdata decide reviewed.csv --entity customer
    """
    import csv

    out = Output(as_json)
    entities = settings().all_entities()
    if entity not in entities:
        raise UsageError(f"unknown entity {entity!r}; defined: {', '.join(entities)}")
    try:
        with file.open(newline="") as f:
            decisions = list(csv.DictReader(f))
    except OSError as exc:
        raise UsageError(f"cannot read {file}: {exc.strerror}") from None
    wanted = {"action", "record_a", "record_b"}
    if not decisions or not wanted <= set(decisions[0]):
        raise UsageError(f"{file}: needs a header with {', '.join(sorted(wanted))} (and optionally note)")
    con = write_warehouse()
    try:
        with transaction(con):
            for n, row in enumerate(decisions, start=2):
                try:
                    review.add_override(
                        con, entity, row["action"], row["record_a"], row["record_b"], row.get("note"), cli_actor()
                    )
                except UsageError as exc:
                    raise UsageError(f"{file}, line {n}: {exc}") from None
        result = tasks.refresh_masterdata(con, settings(), [entity])[0]
    finally:
        con.close()
    out.record(
        {
            "entity": entity,
            "decisions": len(decisions),
            "mode": result.mode,
            "re_resolved_records": result.changed_records,
            "golden_records": result.clusters,
        }
    )


@app.command("evaluate")
def evaluate(
    truth: Annotated[Path, typer.Option("--truth", help="CSV or Parquet: source_system, source_id, true_id")],
    entity: Annotated[str, typer.Option("--entity", "-e", help="the entity to measure")] = "customer",
    as_json: JsonOpt = False,
) -> None:
    """Measure the last resolution against labelled records: pairwise and cluster (B-cubed) precision,
    recall and F1, and the review queue's size.

    Example: coexist masterdata evaluate --entity crm --truth labelled.csv
    """
    import duckdb

    from masterdata.evaluate import cluster_quality, pairwise_quality

    out = Output(as_json)
    reader = "read_parquet" if truth.suffix.lower() == ".parquet" else "read_csv"
    if not truth.is_file():
        raise UsageError(f"--truth: no file {truth}")
    loader = duckdb.connect()
    try:
        labels = loader.sql(
            f"SELECT CAST(source_system AS VARCHAR) AS source_system, CAST(source_id AS VARCHAR) AS source_id, "
            f"CAST(true_id AS VARCHAR) AS true_id FROM {reader}(?)",
            params=[str(truth)],
        ).to_arrow_table()
    except duckdb.Error as exc:
        raise UsageError(f"--truth {truth}: {str(exc).splitlines()[0]}") from None
    finally:
        loader.close()
    con = read_warehouse()
    try:
        pairs = pairwise_quality(con, entity, labels)
        clusters = cluster_quality(con, entity, labels)
        queue = con.execute("SELECT count(*) FROM mdm.review_queue WHERE entity = ?", [entity]).fetchall()[0][0]
    except duckdb.CatalogException:
        raise NotReady("master data has not run yet: `coexist masterdata run`") from None
    finally:
        con.close()
    out.record(
        {
            "entity": entity,
            "pairwise_precision": round(pairs["precision"], 4),
            "pairwise_recall": round(pairs["recall"], 4),
            "pairwise_f1": round(pairs["f1"], 4),
            "cluster_precision": round(clusters["precision"], 4),
            "cluster_recall": round(clusters["recall"], 4),
            "cluster_f1": round(clusters["f1"], 4),
            "entities_exact": round(clusters["exact_entities"], 4),
            "labelled_records": clusters["records"],
            "true_pairs": pairs["true_pairs"],
            "predicted_pairs": pairs["predicted_pairs"],
            "review_queue": int(queue),
        }
    )


@app.command("explain")
def explain(
    record: Annotated[str, typer.Argument(help="SYSTEM:ID or a bare source id")],
    entity: Annotated[str | None, typer.Option("--entity", "-e", help="entity, when the id is ambiguous")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Say why a record sits in its cluster: its golden record, members and the links that join them.

    Example: coexist masterdata explain erp:C010044
    """
    out = Output(as_json)
    con = read_warehouse()
    try:
        found = review.explain(con, record, entity)
    finally:
        con.close()

    def render() -> None:
        for hit in found:
            _render(out, hit)

    out.document(found, render)


def _render(out: Output, hit: dict[str, Any]) -> None:
    out.say(
        f"{hit['record']} is {hit['entity']} {hit['golden_id']} (joined by {hit['rule']}, score {hit['score']})", "bold"
    )
    if hit["golden_record"]:
        out.record(hit["golden_record"], title="golden record")
    out.rows(hit["members"], ["rid", "rule", "score"], title="members")
    if hit["links"]:
        out.rows(hit["links"], ["l_rid", "r_rid", "decision", "rule", "score", "evidence"], title="links")
    for o in hit["overrides"]:
        out.say(f"override {o['action']} {o['a_rid']} {o['b_rid']}: {o['note'] or ''}")
