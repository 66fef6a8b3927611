"""Standardisation as DuckDB macros, so entity definitions can use them in plain SQL.

`cx_company(name)`: lower case, accents stripped, '&' and '+' as 'and', punctuation gone,
common abbreviations expanded and legal-form tokens removed ('Keller Mfg. GmbH' and 'KELLER
MANUFACTURING G.m.b.H.' both become 'keller manufacturing').
`cx_taxid(tax)`: upper case alphanumerics without the leading country letters.
`cx_digits(text)`: digits only, leading zeros dropped (codes like 'P-24-0012', 'PR240012').
`cx_email(email)`, `cx_person(name)`: trimmed lower case; 'Last, First' turned round.
`cx_street(s)`: `cx_text` with street words in one form ('Church Lane' and 'Church Ln', 'r. du Moulin'
and 'rue du Moulin', 'Hauptstraße' and 'HAUPTSTR.' are the same).
`cx_country(c)`: ISO 3166-1 alpha-2 from a code, a name or a common variant ('USA', 'United States',
'Deutschland', 'U.K.'); an unknown value comes back upper-cased, never dropped.

The word lists (legal forms, abbreviations, country names) extend from configuration: `[standardise]`
in coexist.toml (`Vocabulary`), applied by `configure` when the settings load.
"""

from __future__ import annotations

import csv
import re
import unicodedata
from pathlib import Path

import duckdb
from pydantic import Field, field_validator

from core.models import Strict

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
    "pty",
    "dac",
    "sl",
    "slu",
    "srl",
    "spa",
    "sro",
    "oy",
    "oyj",
    "ab",
    "aps",
    "as",
    "asa",
    "pte",
    "bhd",
    "sdn",
    "kk",
    "ltda",
    "se",
    "kgaa",
    "ohg",
    "ug",
    "doo",
    "zoo",
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
    ("pty", "pty"),
    ("dac", "dac"),
    ("slu", "sl"),
    ("sl", "sl"),
    ("srl", "srl"),
    ("spa", "spa"),
    ("sro", "sro"),
    ("oyj", "oy"),
    ("oy", "oy"),
    ("aps", "aps"),
    ("asa", "as"),
    ("ab", "ab"),
    ("pte", "pte"),
    ("bhd", "bhd"),
    ("kk", "kk"),
    ("ltda", "ltda"),
    ("kgaa", "kgaa"),
    ("se", "se"),
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
    "mgmt": "management",
    "mgt": "management",
    "eng": "engineering",
    "engg": "engineering",
    "inds": "industries",
    "ind": "industries",
    "industry": "industries",
    "pharma": "pharmaceuticals",
    "pharm": "pharmaceuticals",
    "pharmaceutical": "pharmaceuticals",
    "dev": "development",
    "devel": "development",
    "mktg": "marketing",
    "natl": "national",
    "bros": "brothers",
    "dist": "distribution",
    "distr": "distribution",
    "ctr": "center",
    "centre": "center",
    "fin": "financial",
    "ins": "insurance",
    "investment": "investments",
    "prop": "properties",
    "props": "properties",
    "property": "properties",
    "constr": "construction",
}
STREET_WORDS = {
    # English: USPS Publication 28 street suffixes and unit words, and the directions
    "street": "st",
    "road": "rd",
    "avenue": "ave",
    "av": "ave",
    "lane": "ln",
    "drive": "dr",
    "boulevard": "blvd",
    "court": "ct",
    "place": "pl",
    "square": "sq",
    "terrace": "ter",
    "crescent": "cres",
    "highway": "hwy",
    "parkway": "pkwy",
    "circle": "cir",
    "close": "cl",
    "gardens": "gdns",
    "suite": "ste",
    "apartment": "apt",
    "building": "bldg",
    "floor": "fl",
    "north": "n",
    "south": "s",
    "east": "e",
    "west": "w",
    # German ('strasse' at the end of a word is 'str' already), French, Spanish, Italian
    "platz": "pl",
    "r": "rue",
    "bd": "blvd",
    "bld": "blvd",
    "ch": "chemin",
    "rte": "route",
    "imp": "impasse",
    "fbg": "faubourg",
    "avda": "ave",
    "avenida": "ave",
    "pza": "plaza",
    "pzza": "piazza",
}
"""Street words -> one form (`cx_street`); configured ones add to them (`street_words`)."""
COUNTRIES = Path(__file__).with_name("countries.csv")


class Vocabulary(Strict):
    """Words added to the built-in lists (`[standardise]` in coexist.toml)."""

    legal_forms: dict[str, str] = Field(
        default_factory=dict, description="token -> canonical form, e.g. { pvt = 'pvt' }: dropped by cx_company"
    )
    abbreviations: dict[str, str] = Field(default_factory=dict, description="token -> its spelled-out word")
    countries: dict[str, str] = Field(default_factory=dict, description="name -> ISO 3166-1 alpha-2")
    street_words: dict[str, str] = Field(
        default_factory=dict, description="street word -> its one form for cx_street, e.g. { via = 'v' }"
    )

    @field_validator("countries")
    @classmethod
    def _iso2(cls, value: dict[str, str]) -> dict[str, str]:
        for name, code in value.items():
            if not (len(code) == 2 and code.isalpha() and code.isupper()):
                raise ValueError(f"{name!r}: {code!r} is not an ISO 3166-1 alpha-2 code (two capital letters)")
        return value


_vocabulary = Vocabulary()


def configure(vocabulary: Vocabulary) -> None:
    """The configured words for every later `install` in this process."""
    global _vocabulary
    _vocabulary = vocabulary


def words(text: str) -> str:
    """A name as the word lists hold it: lower case, no accents, punctuation as spaces, no leading 'the'."""
    folded = "".join(c for c in unicodedata.normalize("NFKD", text.lower()) if not unicodedata.combining(c))
    return re.sub(r"^the ", "", re.sub(r"[^a-z0-9]+", " ", folded.replace("'", "")).strip())


def country_names() -> dict[str, str]:
    with COUNTRIES.open() as f:
        rows = csv.DictReader(line for line in f if not line.startswith("#"))
        names = {row["name"]: row["iso2"] for row in rows}
    return names | {words(k): v for k, v in _vocabulary.countries.items()}


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _token_map_sql(tokens: str) -> str:
    """Rewrite a space-separated token string through ABBREVIATIONS and drop LEGAL_FORMS, in SQL."""
    spelled = ABBREVIATIONS | {words(k): words(v) for k, v in _vocabulary.abbreviations.items()}
    mapping = ", ".join(f"{_quoted(k)}: {_quoted(v)}" for k, v in spelled.items())
    dropped = LEGAL_FORMS + [words(f) for f in _vocabulary.legal_forms]
    forms = ", ".join(_quoted(f) for f in dropped if " " not in f)
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
    canon = [(words(k), words(v)) for k, v in _vocabulary.legal_forms.items()] + LEGAL_FORM_CANON
    forms = " ".join(f"WHEN list_contains(t, {_quoted(token)}) THEN {_quoted(to)}" for token, to in canon)
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
    countries = ", ".join(f"{_quoted(k)}: {_quoted(v)}" for k, v in country_names().items())
    con.execute(
        "CREATE OR REPLACE MACRO cx_country_key(c) AS regexp_replace(trim(regexp_replace(replace("
        "lower(strip_accents(coalesce(c, ''))), '''', ''), '[^a-z0-9]+', ' ', 'g')), '^the ', '')"
    )
    con.execute(
        f"CREATE OR REPLACE MACRO cx_country(c) AS nullif(coalesce(MAP {{{countries}}}[cx_country_key(c)], "
        "upper(cx_country_key(c))), '')"
    )
    street = STREET_WORDS | {words(k): words(v) for k, v in _vocabulary.street_words.items()}
    mapping = ", ".join(f"{_quoted(k)}: {_quoted(v)}" for k, v in street.items())
    con.execute(
        "CREATE OR REPLACE MACRO cx_street(s) AS nullif(array_to_string(list_transform(string_split(cx_text("
        "regexp_replace(replace(lower(coalesce(s, '')), 'ß', 'ss'), 'strasse\\b', 'str', 'g')), ' '), "
        f"lambda t: coalesce(MAP {{{mapping}}}[t], t)), ' '), '')"
    )
