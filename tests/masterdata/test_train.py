"""Learned weights: EM recovers known m/u probabilities; term frequencies are right for one source."""

from __future__ import annotations

import json
import random
import string
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from coexist.sandbox import generator
from masterdata import train
from masterdata.evaluate import pairwise_quality
from masterdata.model import Entity
from masterdata.resolve import Resolver
from tests.harness import cli

M_A, M_B, CARD_A, CARD_B = 0.9, 0.7, 40, 800


def _typo(text: str, rnd: random.Random) -> str:
    i = rnd.randrange(len(text))
    return text[:i] + rnd.choice(string.ascii_lowercase) + text[i + 1 :]


def people(seed: int, entities: int = 3000) -> pa.Table:
    """Records of `entities` people, a third of them duplicated once or twice. A duplicate copies `a`
    with probability M_A and `b` with M_B (else a fresh random value: u = 1/cardinality); its name
    is the same or has one typo."""
    rnd = random.Random(seed)
    rows: dict[str, list[object]] = {"source_id": [], "a": [], "b": [], "name": [], "true_id": []}
    for entity in range(entities):
        a, b = rnd.randrange(CARD_A), rnd.randrange(CARD_B)
        name = "".join(rnd.choice(string.ascii_lowercase) for _ in range(10))
        copies = 1 + (rnd.random() < 1 / 3) * rnd.choice((1, 2))
        for copy in range(copies):
            first = copy == 0
            rows["source_id"].append(f"{entity}-{copy}")
            rows["a"].append(a if first or rnd.random() < M_A else rnd.randrange(CARD_A))
            rows["b"].append(b if first or rnd.random() < M_B else rnd.randrange(CARD_B))
            rows["name"].append(name if first or rnd.random() < 0.8 else _typo(name, rnd))
            rows["true_id"].append(str(entity))
    return pa.table(rows)


LEARNED = {
    "id_prefix": "P",
    "sources": [{"system": "x", "table": "people"}],
    "blocking": [["a"], ["b"]],
    "comparisons": [
        {"name": "a", "levels": [{"when": "l.a = r.a", "label": "same"}]},
        {"name": "b", "levels": [{"when": "l.b = r.b", "label": "same"}]},
        {
            "name": "name",
            "levels": [
                {"when": "l.name = r.name", "label": "exact"},
                {"when": "jaro_winkler_similarity(l.name, r.name) >= 0.9", "label": "close"},
            ],
        },
    ],
}


@pytest.mark.parametrize("seed", [1, 2])
def test_em_recovers_known_probabilities_and_the_model_links_well(seed: int) -> None:
    data = people(seed)
    con = duckdb.connect()
    con.register("_people", data)
    con.execute("CREATE TABLE people AS SELECT source_id, a, b, name FROM _people")
    entity = Entity.model_validate(LEARNED)
    assert train.needs_training(entity) and train.load(con, "people", entity) is None
    result = Resolver(con).resolve("people", entity)
    model = train.load(con, "people", entity)
    assert model is not None
    # u from random pairs: the chance two different people agree by accident.
    assert model.u["a"][0] == pytest.approx(1 / CARD_A, rel=0.25)
    assert model.u["b"][0] == pytest.approx(1 / CARD_B, rel=0.5)
    # m by EM over each blocking rule's pairs: a from the pairs blocked on b and b from those blocked
    # on a (a rule says nothing about the field it blocks on), so both come out unbiased.
    assert model.m["a"][0] == pytest.approx(M_A + (1 - M_A) / CARD_A, abs=0.04)
    assert model.m["b"][0] == pytest.approx(M_B + (1 - M_B) / CARD_B, abs=0.04)
    assert model.m["name"][0] == pytest.approx(0.8, abs=0.06) and model.m["name"][1] == pytest.approx(0.2, abs=0.06)
    assert model.weight("name", 0) > 10 and model.weight("name", 2) < -5
    # Trained weights separate the people: pairs linked are right, and most true pairs are linked.
    truth = pa.table(
        {"source_system": ["x"] * data.num_rows, "source_id": data["source_id"], "true_id": data["true_id"]}
    )
    quality = pairwise_quality(con, "people", truth)
    assert quality["precision"] >= 0.99 and quality["recall"] >= 0.95, quality
    assert result.links > 0


def test_a_changed_definition_is_not_scored_with_an_older_model() -> None:
    entity = Entity.model_validate(LEARNED)
    changed = Entity.model_validate(LEARNED | {"blocking": [["a"]]})
    assert train.version(entity) != train.version(changed)


def test_one_source_dedupe_links_its_duplicates_and_bounds_the_common_value_discount() -> None:
    """One source: a true duplicate shares its name with one other record, which is no reason for
    doubt (the old discount divided by the number of sources and cut every duplicate); a name held
    by 300 different people is weak evidence, but never evidence against (it used to fall far below
    "different")."""
    rnd = random.Random(4)
    rows = []
    for i in range(2000):
        name = "".join(rnd.choice(string.ascii_lowercase) for _ in range(8))
        city = f"city{rnd.randrange(200)}"
        rows.append((f"{i}", name, city, str(i)))
        if i % 4 == 0:
            rows.append((f"{i}d", name, city, str(i)))
    for i in range(300):
        rows.append((f"js{i}", "john smith", f"city{i % 10}", f"js{i}"))
    con = duckdb.connect()
    con.execute("CREATE TABLE crm (source_id VARCHAR, name VARCHAR, city VARCHAR, true_id VARCHAR)")
    con.executemany("INSERT INTO crm VALUES (?, ?, ?, ?)", rows)
    entity = Entity.model_validate(
        {
            "id_prefix": "C",
            "sources": [{"system": "crm", "sql": "SELECT source_id, name, city FROM crm"}],
            "blocking": [["name"]],
            "comparisons": [
                {
                    "name": "name",
                    "levels": [
                        {"when": "l.name = r.name", "weight": 6.0, "tf": "name", "label": "exact"},
                        {"when": "TRUE", "weight": -5.0, "label": "different"},
                    ],
                },
                {
                    "name": "city",
                    "levels": [
                        {"when": "l.city = r.city", "weight": 1.5, "label": "same"},
                        {"when": "TRUE", "weight": -1.0, "label": "different"},
                    ],
                },
            ],
            "thresholds": {"match": 7.0, "review": 1.0},
        }
    )
    Resolver(con).resolve("crm", entity)
    truth = con.sql("SELECT 'crm' AS source_system, source_id, true_id FROM crm").to_arrow_table()
    quality = pairwise_quality(con, "crm", truth)
    assert quality["recall"] == 1.0 and quality["precision"] == 1.0, quality
    smiths = con.execute(
        "SELECT decision, min(score), count(*) FROM mdm.match_pairs WHERE l_rid LIKE 'crm:js%' GROUP BY 1"
    ).fetchall()
    assert [d for d, _, _ in smiths] == ["review"] and smiths[0][1] >= 1.5, smiths


def test_train_command_prints_the_learned_levels(tmp_path: Path) -> None:
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    con.register("_people", people(3, entities=1500))
    con.execute("CREATE TABLE people AS SELECT source_id, a, b, name FROM _people")
    con.close()
    body = json.dumps(LEARNED)
    (tmp_path / "coexist.toml").write_text(f"builtin_entities = false\n[entities.people]\n{_toml(body)}")
    levels = json.loads(cli(tmp_path, "masterdata", "train", "--entity", "people", "--json").stdout)
    by_level = {(r["comparison"], r["level"]): r for r in levels}
    assert set(by_level) == {("a", "same"), ("a", "else"), ("b", "same"), ("b", "else")} | {
        ("name", level) for level in ("exact", "close", "else")
    }
    assert by_level[("name", "exact")]["weight"] > 10 > 0 > by_level[("name", "else")]["weight"]
    run = json.loads(cli(tmp_path, "masterdata", "run", "--entity", "people", "--json").stdout)
    assert run[0]["links"] > 0


def _toml(body: str) -> str:
    """LEARNED as TOML keys (inline tables)."""
    doc = json.loads(body)
    lines = []
    for key, value in doc.items():
        lines.append(f"{key} = {_inline(value)}")
    return "\n".join(lines) + "\n"


def _inline(value: object) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_inline(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_inline(v) for v in value) + "]"
    return json.dumps(value)


def golden_ids(tmp_path: Path) -> dict[str, str]:
    """Every record's golden ID (`--limit 0`: the query command prints 100 rows unless told)."""
    sql = "SELECT source_id, golden_id FROM mdm.xref WHERE entity = 'people'"
    rows = json.loads(cli(tmp_path, "query", sql, "--json", "--limit", "0").stdout)
    return {r["source_id"]: r["golden_id"] for r in rows}


def test_evaluate_and_a_batch_of_decisions_in_one_incremental_run(tmp_path: Path) -> None:
    data = people(5, entities=1500)
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    con.register("_people", data)
    con.execute("CREATE TABLE people AS SELECT source_id, a, b, name FROM _people")
    truth = tmp_path / "labels.csv"
    con.execute(f"COPY (SELECT 'x' AS source_system, source_id, true_id FROM _people) TO '{truth}' (HEADER)")
    con.close()
    (tmp_path / "coexist.toml").write_text(f"builtin_entities = false\n[entities.people]\n{_toml(json.dumps(LEARNED))}")
    cli(tmp_path, "masterdata", "run")
    measured = json.loads(
        cli(tmp_path, "masterdata", "evaluate", "-e", "people", "--truth", str(truth), "--json").stdout
    )
    assert measured["pairwise_precision"] >= 0.98 and measured["pairwise_recall"] >= 0.9, measured
    assert 0.9 <= measured["cluster_f1"] <= 1 and measured["labelled_records"] == data.num_rows, measured
    # Two decisions at once: split a linked pair, link two records of different golden records.
    xref = golden_ids(tmp_path)
    by_golden: dict[str, list[str]] = {}
    for source_id, golden in sorted(xref.items()):
        by_golden.setdefault(golden, []).append(source_id)
    pair = next(members for members in by_golden.values() if len(members) == 2)
    loners = [members[0] for members in by_golden.values() if len(members) == 1][:2]
    decisions = tmp_path / "decisions.csv"
    decisions.write_text(
        "action,record_a,record_b,note\n"
        f"split,x:{pair[0]},x:{pair[1]},not the same\nlink,x:{loners[0]},x:{loners[1]},same person\n"
    )
    done = json.loads(cli(tmp_path, "masterdata", "decide", str(decisions), "-e", "people", "--json").stdout)
    assert done["decisions"] == 2 and done["mode"] == "incremental" and done["re_resolved_records"] == 4, done
    after = golden_ids(tmp_path)
    assert after[pair[0]] != after[pair[1]] and after[loners[0]] == after[loners[1]]
    bad = tmp_path / "bad.csv"
    bad.write_text(f"action,record_a,record_b\nlink,x:{loners[0]},x:nobody\n")
    refused = cli(tmp_path, "masterdata", "decide", str(bad), "-e", "people", check=False)
    assert refused.returncode == 2 and "line 2" in refused.stderr and "x:nobody" in refused.stderr, refused.stderr


FIRST = ["anna", "ben", "carla", "david", "eva", "farid", "grace", "hugo", "ines", "jon", "kemal", "lena"]
LAST = [f"{a}{b}" for a in ("smith", "meyer", "rossi", "garcia", "novak", "dubois") for b in ("", "son", "er", "i")]


def persons(seed: int, entities: int = 2000) -> pa.Table:
    """People with typos of the usual kinds: names, dates of birth (day and month swapped, a day off),
    e-mails (other domain, missing), postcodes (other street in the district, missing)."""
    import datetime as dt

    rnd = random.Random(seed)
    cols: dict[str, list[object]] = {k: [] for k in ("source_id", "name", "dob", "email", "postcode", "true_id")}
    for entity in range(entities):
        first, last = rnd.choice(FIRST), rnd.choice(LAST)
        dob = dt.date(1950, 1, 1) + dt.timedelta(days=rnd.randrange(18000))
        # A handle of its own: an e-mail made from the name would follow the name, and Fellegi-Sunter
        # assumes fields independent given match or not (see the README's limits).
        user = "".join(rnd.choice(string.ascii_lowercase + string.digits) for _ in range(9))
        domain = rnd.choice(["mail.com", "post.de", "web.fr", "corp.co.uk"])
        district = f"{rnd.choice('ABCDEFGHKLMN')}{rnd.choice('ABCDEFGHKLMN')}{rnd.randrange(1, 40)}"
        postcode = f"{district} {rnd.randrange(10)}{rnd.choice('ABDEFGH')}{rnd.choice('JLNPQRS')}"
        for copy in range(1 + (rnd.random() < 1 / 3) * rnd.choice((1, 2))):
            name, d, mail, code = f"{first} {last}", dob, f"{user}@{domain}", postcode
            if copy:
                roll = rnd.random()
                name = _typo(name, rnd) if roll < 0.3 else name
                roll = rnd.random()
                if roll < 0.05 and d.day <= 12:
                    d = dt.date(d.year, d.day, d.month)
                elif roll < 0.1:
                    d = d + dt.timedelta(days=1)
                roll = rnd.random()
                mail = None if roll < 0.1 else (f"{user}@other.org" if roll < 0.2 else mail)
                roll = rnd.random()
                code = None if roll < 0.05 else (f"{district} 9ZZ" if roll < 0.15 else code)
            cols["source_id"].append(f"{entity}-{copy}")
            cols["name"].append(name)
            cols["dob"].append(d)
            cols["email"].append(mail)
            cols["postcode"].append(code)
            cols["true_id"].append(str(entity))
    return pa.table(cols)


@pytest.mark.parametrize("seed", [11, 14])
def test_ready_made_levels_learn_and_link_people(seed: int) -> None:
    data = persons(seed)
    con = duckdb.connect()
    con.register("_persons", data)
    con.execute("CREATE TABLE persons AS SELECT * EXCLUDE (true_id) FROM _persons")
    entity = Entity.model_validate(
        {
            "id_prefix": "H",
            "sources": [{"system": "hr", "table": "persons"}],
            "blocking": [["dob"], ["email"], ["name"]],
            "comparisons": [
                {"name": "name", "use": "name", "column": "name"},
                {"name": "dob", "use": "date", "column": "dob"},
                {"name": "email", "use": "email", "column": "email"},
                {"name": "postcode", "use": "postcode", "column": "postcode"},
            ],
        }
    )
    assert [lv.label for lv in entity.comparisons[1].levels] == [
        "missing",
        "exact",
        "day and month swapped",
        "within 1 days",
        "within 31 days",
    ]
    Resolver(con).resolve("hr", entity)
    model = train.load(con, "hr", entity)
    assert model is not None
    for comparison in ("name", "dob", "email", "postcode"):
        weights = [model.weight(comparison, k) for k in range(1, len(model.m[comparison]))]
        assert weights[0] > 0 > weights[-1], (comparison, weights)  # exact is for, "else" against
    truth = pa.table(
        {"source_system": ["hr"] * data.num_rows, "source_id": data["source_id"], "true_id": data["true_id"]}
    )
    quality = pairwise_quality(con, "hr", truth)
    assert quality["precision"] >= 0.99 and quality["recall"] >= 0.9, quality


def test_a_comparison_has_levels_or_a_ready_made_kind() -> None:
    with pytest.raises(ValueError, match="give levels, or use"):
        Entity.model_validate(LEARNED | {"comparisons": [{"name": "a"}]})
    with pytest.raises(ValueError, match="needs column"):
        Entity.model_validate(LEARNED | {"comparisons": [{"name": "a", "use": "date"}]})


def test_train_from_labelled_pairs(tmp_path: Path) -> None:
    """Pairs linked by hand teach m directly: 300 true pairs recover the generator's m."""
    data = people(8, entities=1500)
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    con.register("_people", data)
    con.execute("CREATE TABLE people AS SELECT source_id, a, b, name FROM _people")
    pairs = con.execute(
        "SELECT 'x:' || l.source_id, 'x:' || r.source_id FROM _people l JOIN _people r "
        "ON l.true_id = r.true_id AND l.source_id < r.source_id ORDER BY hash(l.source_id) LIMIT 300"
    ).fetchall()
    con.close()
    (tmp_path / "coexist.toml").write_text(f"builtin_entities = false\n[entities.people]\n{_toml(json.dumps(LEARNED))}")
    cli(tmp_path, "masterdata", "run")
    refused = cli(tmp_path, "masterdata", "train", "--from-labels", check=False)
    assert refused.returncode == 2 and "no linked pairs" in refused.stderr, refused.stderr
    decisions = tmp_path / "labels.csv"
    decisions.write_text("action,record_a,record_b\n" + "".join(f"link,{a},{b}\n" for a, b in pairs))
    cli(tmp_path, "masterdata", "decide", str(decisions), "-e", "people")
    levels = json.loads(cli(tmp_path, "masterdata", "train", "--from-labels", "--json").stdout)
    m = {(r["comparison"], r["level"]): r["m"] for r in levels}
    assert m[("a", "same")] == pytest.approx(M_A, abs=0.06) and m[("b", "same")] == pytest.approx(M_B, abs=0.07), m
    assert m[("name", "exact")] == pytest.approx(0.8, abs=0.07), m


def test_each_comparison_learns_from_the_cleanest_rule_that_can_estimate_it() -> None:
    """Generated customers: a tax number, when both records have one, is the same for one company
    (m of "different" is 0); the name block also holds different companies of one generic name.
    Averaged over the rules, EM took those for matches and learned that a third of matches differ
    in tax number; estimated from the cleanest rule (here the tax rule teaches the name's m), with
    the known m held fixed in the name block, it is close to the truth, as is the address's."""
    records = generator.customer_records(50_000, seed=3)
    con = duckdb.connect()
    con.register("_records", records.to_arrow())
    con.execute("CREATE TABLE records AS SELECT * FROM _records")
    entity = generator.customer_entity("records", learned=True)
    Resolver(con).resolve("customer", entity)
    model = train.load(con, "customer", entity)
    assert model is not None
    con.execute(
        "CREATE TABLE truth AS SELECT i.*, r.true_id FROM mdm.input_customer i JOIN records r "
        "ON i.source_system = r.source_system AND i.source_id = r.source_id"
    )
    pairs = "FROM truth l JOIN truth r USING (true_id) WHERE l.rid < r.rid"
    truth = [con.execute(f"SELECT {g}, count(*) {pairs} GROUP BY 1").fetchall() for g in train.gamma(entity)]
    tax = dict(truth[[c.name for c in entity.comparisons].index("tax_id")])
    assert tax.get(2, 0) == 0 and tax[1] > 0  # present on both sides: always the same
    assert model.m["tax_id"][2] is not None and model.m["tax_id"][2] < 0.02, model.m["tax_id"]
    address = dict(truth[-1])
    total = sum(address.values())
    for level, m in enumerate(model.m["address"]):
        assert m == pytest.approx(address.get(level, 0) / total, abs=0.03), (level, model.m["address"], address)
