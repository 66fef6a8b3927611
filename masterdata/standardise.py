"""Standardisation as DuckDB macros, so entity definitions can use them in plain SQL.

`cx_company(name)`: lower case, accents stripped, '&' and '+' as 'and', punctuation gone,
common abbreviations expanded and legal-form tokens removed ('Keller Mfg. GmbH' and 'KELLER
MANUFACTURING G.m.b.H.' both become 'keller manufacturing').
`cx_taxid(tax)`: upper case alphanumerics without the leading country letters.
`cx_digits(text)`: digits only, leading zeros dropped (codes like 'P-24-0012', 'PR240012').
`cx_email(email)`, `cx_person(name)`: trimmed lower case; 'Last, First' turned round.
"""

from __future__ import annotations

import duckdb

LEGAL_FORMS = [
    "inc",
    "incorporated",
    "llc",
    "corp",
    "corporation",
    "co",
    "company",
    "gmbh",
    "mbh",
    "ag",
    "aktiengesellschaft",
    "kg",
    "ltd",
    "limited",
    "plc",
    "llp",
    "public limited company",
    "sa",
    "sas",
    "sarl",
    "societe anonyme",
    "bv",
    "nv",
    "the",
    "u",
    "public",
    "societe",
    "anonyme",
    "cie",
]
LEGAL_FORM_CANON = [  # most specific first
    ("kg", "kg"),
    ("mbh", "gmbh"),
    ("gmbh", "gmbh"),
    ("aktiengesellschaft", "ag"),
    ("ag", "ag"),
    ("llp", "llp"),
    ("plc", "plc"),
    ("public", "plc"),
    ("llc", "llc"),
    ("incorporated", "inc"),
    ("inc", "inc"),
    ("corporation", "corp"),
    ("corp", "corp"),
    ("limited", "ltd"),
    ("ltd", "ltd"),
    ("sarl", "sarl"),
    ("sas", "sas"),
    ("anonyme", "sa"),
    ("sa", "sa"),
    ("bv", "bv"),
    ("nv", "nv"),
]
ABBREVIATIONS = {
    "intl": "international",
    "int l": "international",
    "tech": "technologies",
    "techn": "technologies",
    "technology": "technologies",
    "mfg": "manufacturing",
    "svcs": "services",
    "service": "services",
    "sys": "systems",
    "system": "systems",
    "assoc": "associates",
    "assocs": "associates",
    "grp": "group",
    "gruppe": "group",
    "hldgs": "holdings",
    "holding": "holdings",
    "labs": "laboratories",
    "lab": "laboratories",
    "soln": "solutions",
    "solution": "solutions",
    "consultants": "consulting",
    "consult": "consulting",
}


def _token_map_sql(tokens: str) -> str:
    """Rewrite a space-separated token string through ABBREVIATIONS and drop LEGAL_FORMS, in SQL."""
    mapping = ", ".join(f"'{k}': '{v}'" for k, v in ABBREVIATIONS.items())
    forms = ", ".join(f"'{f}'" for f in LEGAL_FORMS if " " not in f)
    return (
        f"array_to_string(list_filter(list_transform(string_split({tokens}, ' '), "
        f"lambda t: coalesce(MAP {{{mapping}}}[t], t)), lambda t: t <> '' AND NOT list_contains([{forms}], t)), ' ')"
    )


def install(con: duckdb.DuckDBPyConnection) -> None:
    """Create (or replace) the standardisation macros in this connection."""
    cleaned = (
        "regexp_replace(regexp_replace(replace(replace(replace(lower(strip_accents(coalesce(name, ''))), '&', ' and '), "
        "'+', ' and '), '''', ''), '[^a-z0-9 ]', ' ', 'g'), '\\s+', ' ', 'g')"
    )
    # Dotted abbreviations ('g.m.b.h.', 's.a.r.l.') collapse before punctuation turns into spaces.
    dotted = (
        "regexp_replace(lower(strip_accents(coalesce(name, ''))), "
        "'\\b([a-z])\\.([a-z])\\.(?:([a-z])\\.)?(?:([a-z])\\.)?', '\\1\\2\\3\\4', 'g')"
    )
    cleaned = cleaned.replace("lower(strip_accents(coalesce(name, '')))", dotted)
    con.execute(
        f"CREATE OR REPLACE MACRO cx_company(name) AS "
        f"trim(regexp_replace({_token_map_sql(cleaned)}, '(^and | and$|^and$)', '', 'g'))"
    )
    forms = " ".join(f"WHEN list_contains(t, '{token}') THEN '{canon}'" for token, canon in LEGAL_FORM_CANON)
    con.execute(
        "CREATE OR REPLACE MACRO cx_legal_form(name) AS (SELECT CASE " + forms + " END FROM (SELECT "
        "string_split(regexp_replace(regexp_replace(lower(strip_accents(coalesce(name, ''))), "
        "'\\b([a-z])\\.([a-z])\\.(?:([a-z])\\.)?(?:([a-z])\\.)?', '\\1\\2\\3\\4', 'g'), '[^a-z0-9]+', ' ', 'g'), ' ') AS t))"
    )
    con.execute(
        "CREATE OR REPLACE MACRO cx_taxid(tax) AS nullif(regexp_replace("
        "regexp_replace(upper(coalesce(tax, '')), '[^A-Z0-9]', '', 'g'), '^[A-Z]{2}', ''), '')"
    )
    con.execute(
        "CREATE OR REPLACE MACRO cx_digits(code) AS nullif(ltrim(regexp_replace(coalesce(code, ''), "
        "'[^0-9]', '', 'g'), '0'), '')"
    )
    con.execute("CREATE OR REPLACE MACRO cx_email(email) AS nullif(lower(trim(coalesce(email, ''))), '')")
    con.execute(
        "CREATE OR REPLACE MACRO cx_text(t) AS nullif(trim(regexp_replace(regexp_replace("
        "lower(strip_accents(coalesce(t, ''))), '[^a-z0-9 ]', ' ', 'g'), '\\s+', ' ', 'g')), '')"
    )
    con.execute(
        "CREATE OR REPLACE MACRO cx_person(full_name) AS cx_text(CASE WHEN contains(full_name, ',') THEN "
        "trim(split_part(full_name, ',', 2)) || ' ' || trim(split_part(full_name, ',', 1)) ELSE full_name END)"
    )
    con.execute(
        "CREATE OR REPLACE MACRO cx_street(s) AS cx_text(replace(replace(replace(replace(replace(replace("
        "lower(coalesce(s, '')), 'street', 'st'), 'road', 'rd'), 'avenue', 'ave'), 'strasse', 'str'), "
        "'straße', 'str'), 'lane', 'ln'))"
    )
