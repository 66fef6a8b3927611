"""The data generator: a coherent professional-services firm in both systems, with planted breaks.

The same customers, projects and people live in the PSA and the ERP, spelled the way two
systems spell them (see `coexist.drift`). Time flows from PSA approval to ERP posting,
invoices from the PSA to receivables, revenue and cost into the general ledger. Known
discrepancies are planted on purpose and listed in a ground-truth manifest:

- `manifest/entities.parquet`: entity, source_system, source_id, true_id (one row per source record);
- `manifest/breaks.parquet`: recon, break_type, left_key, right_key, project_code, period, legal_entity;
- `manifest/summary.json`: counts.

Volume work (time entries, postings, invoices, GL) is vectorised in numpy/Polars and loaded with
PostgreSQL COPY and MariaDB LOAD DATA; only master data (thousands of rows) is drifted per record.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from coexist.sandbox import drift
from coexist.sandbox.servers import SandboxState, my_app_connect, pg_app_connect, reset_data
from core.errors import UsageError
from masterdata.model import Comparison, Entity, builtin_entities

# ---------------------------------------------------------------- the firm's fixed shape

COMPANY_CODES = pl.DataFrame(
    {
        "company_code": ["1000", "2000", "3000", "4000"],
        "name": ["Acme Consulting US Inc", "Acme Beratung GmbH", "Acme Consulting UK Ltd", "Acme Conseil SAS"],
        "country": ["US", "DE", "GB", "FR"],
        "currency": ["USD", "EUR", "GBP", "EUR"],
    }
)
COMPANY_CODE_OF = dict(zip(COMPANY_CODES["country"].to_list(), COMPANY_CODES["company_code"].to_list(), strict=True))
# The PSA names legal entities its own way; the country is the bridge.
PSA_LEGAL_ENTITY = {"US": "ACME-US", "DE": "ACME-DE", "GB": "ACME-UK", "FR": "ACME-FR"}
CUSTOMER_COUNTRIES = ["US", "DE", "GB", "FR", "NL"]
CUSTOMER_COUNTRY_P = [0.38, 0.25, 0.2, 0.12, 0.05]
HOME_ENTITY = {"US": "US", "DE": "DE", "GB": "GB", "FR": "FR", "NL": "DE"}
CCY = {"US": "USD", "DE": "EUR", "GB": "GBP", "FR": "EUR", "NL": "EUR"}
USD_PER = {"USD": 1.0, "EUR": 1.08, "GBP": 1.27}
VAT = {"US": 0.0, "DE": 0.19, "GB": 0.20, "FR": 0.20}

STEMS = [
    "Northwind",
    "Bluewater",
    "Keller",
    "Apex",
    "Summit",
    "Pinnacle",
    "Meridian",
    "Harbor",
    "Redwood",
    "Silverline",
    "Ironbridge",
    "Lakeside",
    "Brightpath",
    "Crestview",
    "Evergreen",
    "Falcon",
    "Granite",
    "Horizon",
    "Juniper",
    "Kestrel",
    "Lindenhof",
    "Maple",
    "Nordstern",
    "Oakridge",
    "Paragon",
    "Quantum",
    "Riverside",
    "Sterling",
    "Trident",
    "Unity",
    "Vanguard",
    "Westbrook",
    "Zenith",
    "Alder",
    "Beacon",
    "Cobalt",
    "Delta",
    "Ember",
    "Fjord",
    "Garnet",
    "Helios",
    "Indigo",
    "Jasper",
    "Kronos",
    "Lumen",
    "Mistral",
    "Nimbus",
    "Onyx",
    "Polaris",
    "Quarry",
    "Rosewood",
    "Sable",
    "Tamarack",
    "Umbra",
    "Vertex",
    "Willow",
    "Yarrow",
    "Zephyr",
    "Schmidt",
    "Müller",
    "Weber",
    "Fischer",
    "Becker",
    "Hoffmann",
    "Schulz",
    "Wagner",
    "Dubois",
    "Lefèvre",
    "Moreau",
    "Laurent",
    "Garnier",
    "Fontaine",
    "Harrison",
    "Whitfield",
    "Ashford",
    "Pemberton",
    "Thornton",
    "Blackwood",
    "Hartley",
    "Carrington",
    "Donnelly",
    "Fairbanks",
    "Galloway",
    "Hastings",
    "Kingsley",
    "Lancaster",
    "Mercer",
    "Norwood",
    "Prescott",
    "Radcliffe",
    "Sheffield",
    "Templeton",
    "Wexford",
    "Arcadia",
    "Boreal",
    "Cascade",
    "Dunmore",
    "Elmstead",
    "Foxglove",
    "Glenmore",
    "Hawthorne",
    "Ivywood",
    "Kensington",
    "Larkspur",
    "Marlowe",
    "Newhaven",
    "Orchard",
    "Penrose",
    "Quillon",
    "Rockport",
    "Stonegate",
    "Tidewater",
    "Upland",
    "Valemont",
    "Windmere",
    "Yorkshire",
    "Bergmann",
    "Krüger",
    "Richter",
    "Neumann",
    "Schwarz",
    "Zimmermann",
    "Braun",
    "Hofmann",
    "Hartmann",
    "Lange",
    "Werner",
    "Krause",
    "Lehmann",
    "Köhler",
    "Maier",
    "Vogel",
    "Jung",
    "Roth",
    "Sommer",
    "Arnold",
]
INDUSTRY = [
    "Logistics",
    "Manufacturing",
    "Consulting",
    "Systems",
    "Technologies",
    "Foods",
    "Energy",
    "Medical",
    "Capital",
    "Retail",
    "Pharma",
    "Engineering",
    "Insurance",
    "Analytics",
    "Aerospace",
    "Automotive",
    "Telecom",
    "Chemicals",
    "Textiles",
    "Biotech",
    "Media",
    "Construction",
    "Shipping",
    "Software",
    "Hospitality",
    "Robotics",
    "Farming",
    "Instruments",
    "Holdings",
    "Services",
]
GENERIC_NAMES = [
    "Global Solutions",
    "United Services",
    "Premier Consulting",
    "First National Holdings",
    "International Trading",
    "General Industries",
    "Advanced Systems",
    "Digital Solutions",
    "Allied Services",
    "Standard Manufacturing",
    "Central Logistics",
    "Universal Technologies",
]
CITIES: dict[str, list[tuple[str, str]]] = {
    "US": [
        ("New York", "100"),
        ("Chicago", "606"),
        ("Austin", "787"),
        ("Boston", "021"),
        ("Denver", "802"),
        ("Seattle", "981"),
        ("Atlanta", "303"),
        ("Phoenix", "850"),
    ],
    "DE": [
        ("Berlin", "10"),
        ("München", "80"),
        ("Hamburg", "20"),
        ("Köln", "50"),
        ("Frankfurt am Main", "60"),
        ("Stuttgart", "70"),
        ("Leipzig", "04"),
    ],
    "GB": [
        ("London", "EC1"),
        ("Manchester", "M1"),
        ("Leeds", "LS1"),
        ("Bristol", "BS1"),
        ("Glasgow", "G1"),
        ("Birmingham", "B1"),
    ],
    "FR": [("Paris", "750"), ("Lyon", "690"), ("Marseille", "130"), ("Toulouse", "310"), ("Nantes", "440")],
    "NL": [("Amsterdam", "10"), ("Rotterdam", "30"), ("Utrecht", "35"), ("Eindhoven", "56")],
}
STREETS: dict[str, list[str]] = {
    "US": ["Main Street", "Oak Avenue", "Park Road", "Elm Street", "Market Street", "Lake Avenue"],
    "DE": ["Hauptstraße", "Bahnhofstraße", "Gartenstraße", "Lindenstrasse", "Schulstraße"],
    "GB": ["High Street", "Station Road", "Church Lane", "Victoria Road", "Mill Lane"],
    "FR": ["rue de la Paix", "rue Victor Hugo", "avenue Jean Jaurès", "rue du Moulin"],
    "NL": ["Kerkstraat", "Dorpsstraat", "Stationsweg", "Molenweg"],
}
FIRST_NAMES = [
    "William",
    "Robert",
    "Elizabeth",
    "Katherine",
    "Michael",
    "Jennifer",
    "Thomas",
    "Christopher",
    "Alexander",
    "Margaret",
    "Johannes",
    "Stefan",
    "Daniel",
    "Joseph",
    "Andrew",
    "Patricia",
    "Susanne",
    "Nicholas",
    "Anna",
    "Laura",
    "Julia",
    "Lukas",
    "Felix",
    "Sophie",
    "Emma",
    "Olivia",
    "Noah",
    "Liam",
    "Mia",
    "Lena",
    "Paul",
    "Jonas",
    "Marie",
    "Claire",
    "Pierre",
    "Camille",
    "Hugo",
    "Louise",
    "Oliver",
    "George",
    "Amelia",
    "Isla",
    "Harry",
    "Jack",
    "Charlotte",
    "Emily",
    "Sarah",
    "David",
    "James",
    "Maria",
    "Sofia",
    "Elena",
    "Marco",
    "Luca",
    "Priya",
    "Arjun",
    "Wei",
    "Yuki",
    "Fatima",
    "Omar",
]
LAST_NAMES = [
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Miller",
    "Davis",
    "Garcia",
    "Wilson",
    "Anderson",
    "Taylor",
    "Thomas",
    "Moore",
    "Martin",
    "Jackson",
    "Thompson",
    "White",
    "Harris",
    "Clark",
    "Lewis",
    "Robinson",
    "Walker",
    "Young",
    "Allen",
    "King",
    "Wright",
    "Scott",
    "Green",
    "Baker",
    "Müller",
    "Schmidt",
    "Schneider",
    "Fischer",
    "Weber",
    "Meyer",
    "Wagner",
    "Becker",
    "Schulz",
    "Hoffmann",
    "Koch",
    "Richter",
    "Klein",
    "Wolf",
    "Dubois",
    "Durand",
    "Lefebvre",
    "Leroy",
    "Moreau",
    "Simon",
    "Laurent",
    "Michel",
    "Garcia-Lopez",
    "Martin-Smith",
    "Patel",
    "Shah",
    "Chen",
    "Wang",
    "Tanaka",
    "Suzuki",
    "Rossi",
    "Bianchi",
    "Kowalski",
    "Nowak",
    "Novak",
    "Jensen",
    "Hansen",
    "Larsen",
    "Andersson",
    "Nilsson",
]
LABOR_CATEGORIES = ["Analyst", "Consultant", "Senior Consultant", "Manager", "Senior Manager", "Partner"]
CATEGORY_RATES = np.array([110.0, 150.0, 190.0, 240.0, 290.0, 380.0])
PROJECT_WORDS = [
    "ERP rollout",
    "S/4 migration",
    "Data platform",
    "Cloud migration",
    "Finance transformation",
    "CRM implementation",
    "Supply chain redesign",
    "Cyber assessment",
    "Payroll integration",
    "Analytics uplift",
    "PMO support",
    "Process mining",
    "Tax reporting",
    "Treasury upgrade",
    "HR cloud",
    "Warehouse automation",
    "Audit readiness",
]


@dataclass(frozen=True)
class Scale:
    customers: int
    projects_per_customer: float
    resources: int
    time_entries: int
    months: int = 12
    seed: int = 7
    end_date: dt.date = dt.date(2026, 10, 31)

    @classmethod
    def named(cls, name: str, customers: int | None = None, time_entries: int | None = None, seed: int = 7) -> Scale:
        presets = {
            "tiny": cls(customers=60, projects_per_customer=2.0, resources=40, time_entries=4_000),
            "small": cls(customers=300, projects_per_customer=2.5, resources=150, time_entries=50_000),
            "medium": cls(customers=3_000, projects_per_customer=2.5, resources=1_200, time_entries=400_000),
            "large": cls(customers=15_000, projects_per_customer=2.5, resources=6_000, time_entries=1_200_000),
        }
        if name not in presets:
            raise UsageError(f"--scale must be one of {', '.join(presets)}, got {name!r}")
        base = presets[name]
        return cls(
            customers=customers or base.customers,
            projects_per_customer=base.projects_per_customer,
            resources=base.resources if customers is None else max(20, customers // 2),
            time_entries=time_entries or base.time_entries,
            months=base.months,
            seed=seed,
        )


# ---------------------------------------------------------------- master data


def _tax_id(country: str, rng: np.random.Generator) -> str:
    digits = "".join(str(d) for d in rng.integers(0, 10, 9))
    if country == "US":
        return f"{digits[:2]}-{digits[2:]}"
    if country == "FR":
        return f"FR{int(rng.integers(10, 99))}{digits}"
    if country == "NL":
        return f"NL{digits}B01"
    return f"{country}{digits}"


def _company_names(n: int, rng: np.random.Generator) -> list[tuple[str, str]]:
    """(body, country) pairs; about 4% share a generic body with a different company."""
    names: list[tuple[str, str]] = []
    used: set[tuple[str, str]] = set()
    countries = rng.choice(CUSTOMER_COUNTRIES, size=n, p=CUSTOMER_COUNTRY_P)
    for i in range(n):
        country = str(countries[i])
        if rng.random() < 0.04:
            body = GENERIC_NAMES[int(rng.integers(0, len(GENERIC_NAMES)))]
        else:
            for attempt in range(1000):
                stem = STEMS[int(rng.integers(0, len(STEMS)))]
                noun = INDUSTRY[int(rng.integers(0, len(INDUSTRY)))]
                shape = rng.random() if attempt < 20 else 1.0
                if shape >= 0.999:  # the simple shapes are used up (large firms): three-word names
                    body = f"{stem} {STEMS[int(rng.integers(0, len(STEMS)))]} {noun}"
                elif shape < 0.55:
                    body = f"{stem} {noun}"
                elif shape < 0.75:
                    body = f"{stem} and {STEMS[int(rng.integers(0, len(STEMS)))]}"
                elif shape < 0.9:
                    body = f"{stem} {noun} International"
                else:
                    body = f"{stem} {noun} Group"
                if (body, country) not in used:
                    break
        used.add((body, country))
        names.append((body, country))
    return names


def build_customers(spec: Scale, rng: np.random.Generator) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """True customers, PSA clients and ERP customers (with in-system duplicates)."""
    truth_rows: list[dict[str, Any]] = []
    for i, (body, country) in enumerate(_company_names(spec.customers, rng)):
        suffixes = drift.LEGAL_SUFFIXES[country]
        city, zip_prefix = CITIES[country][int(rng.integers(0, len(CITIES[country])))]
        street = STREETS[country][int(rng.integers(0, len(STREETS[country])))]
        truth_rows.append(
            {
                "true_id": f"CUST-{i:06d}",
                "body": body,
                "suffix": suffixes[int(rng.integers(0, len(suffixes)))],
                "country": country,
                "tax_id": _tax_id(country, rng),
                "city": city,
                "postcode": f"{zip_prefix}{int(rng.integers(10, 99))}",
                "street": f"{street} {int(rng.integers(1, 200))}",
                "entity": HOME_ENTITY[country],
                "currency": CCY[country],
                "in_erp": bool(rng.random() < 0.95),
            }
        )
    truth = pl.DataFrame(truth_rows)

    psa_rows: list[dict[str, Any]] = []
    erp_rows: list[dict[str, Any]] = []
    next_client = 1
    next_cust = 10001
    for row in truth_rows:
        psa_copies = 2 if rng.random() < 0.03 else 1
        for copy in range(psa_copies):
            name = (
                f"{row['body']} {row['suffix']}"
                if copy == 0 and rng.random() < 0.6
                else drift.vary_company(row["body"], row["suffix"], rng, 0.7)
            )
            moved = rng.random() < 0.08
            city, zip_prefix = (
                CITIES[row["country"]][int(rng.integers(0, len(CITIES[row["country"]])))]
                if moved
                else (row["city"], "")
            )
            postcode = f"{zip_prefix}{int(rng.integers(10, 99))}" if moved and zip_prefix else row["postcode"]
            tax = None if rng.random() < 0.12 else row["tax_id"]
            psa_rows.append(
                {
                    "client_id": next_client,
                    "client_name": name,
                    "tax_id": tax,
                    "billing_country": row["country"],
                    "billing_city": city,
                    "billing_postcode": postcode,
                    "billing_address": row["street"] if not moved else drift.vary_street(row["street"], rng),
                    "currency": row["currency"],
                    "legal_entity": PSA_LEGAL_ENTITY[row["entity"]],
                    "true_id": row["true_id"],
                }
            )
            next_client += 1
        if not row["in_erp"]:
            continue
        erp_copies = 2 if rng.random() < 0.03 else 1
        for _copy in range(erp_copies):
            name = drift.vary_company(row["body"], row["suffix"], rng)
            if rng.random() < 0.4:
                name = name.upper()
            tax_roll = rng.random()
            tax = (
                None
                if tax_roll < 0.1
                else (drift.format_tax_id(row["tax_id"], rng) if tax_roll < 0.5 else row["tax_id"])
            )
            moved = rng.random() < 0.1
            city, zip_prefix = (
                CITIES[row["country"]][int(rng.integers(0, len(CITIES[row["country"]])))]
                if moved
                else (row["city"], "")
            )
            postcode = f"{zip_prefix}{int(rng.integers(10, 99))}" if moved and zip_prefix else row["postcode"]
            cc = COMPANY_CODE_OF[row["entity"]]
            erp_rows.append(
                {
                    "cust_no": f"C{next_cust:06d}",
                    "company_code": cc,
                    "name": name[:200],
                    "vat_no": tax,
                    "country": row["country"],
                    "city": city.upper() if rng.random() < 0.3 else city,
                    "postcode": postcode,
                    "street": drift.vary_street(row["street"], rng),
                    "payment_terms": str(rng.choice(["NET30", "NET45", "NET60", "NET14"])),
                    "currency": row["currency"],
                    "true_id": row["true_id"],
                }
            )
            next_cust += int(rng.integers(1, 4))
    return truth, pl.DataFrame(psa_rows), pl.DataFrame(erp_rows)


def customer_records(customers: int, seed: int) -> pl.DataFrame:
    """The PSA and ERP customer records of `customers` companies in one frame with the same columns
    (source_system, source_id, name, tax_id, country, city, postcode, street, true_id): master
    data's input without the databases, for benchmarks and training tests."""
    spec = Scale(customers=customers, projects_per_customer=1, resources=10, time_entries=10, seed=seed)
    _, psa, erp = build_customers(spec, np.random.default_rng(seed))
    names = ("source_id", "name", "tax_id", "country", "city", "postcode", "street")
    psa_columns = (
        "client_id",
        "client_name",
        "tax_id",
        "billing_country",
        "billing_city",
        "billing_postcode",
        "billing_address",
    )
    erp_columns = ("cust_no", "name", "vat_no", "country", "city", "postcode", "street")
    return pl.concat(
        frame.select(
            pl.lit(system).alias("source_system"),
            *(pl.col(c).cast(pl.String).alias(n) for c, n in zip(columns, names, strict=True)),
            "true_id",
        )
        for system, frame, columns in (("psa", psa, psa_columns), ("erp", erp, erp_columns))
    )


def customer_entity(records: str, learned: bool) -> Entity:
    """The built-in customer entity reading `records` (a relation with the columns of
    `customer_records`); `learned`: as the README's recipe has it for training, no weight set by
    hand and the fields of an address in one comparison."""
    entity = builtin_entities()["customer"].model_copy(deep=True)
    for source in entity.sources:
        source.sql = (
            "SELECT source_id, name, tax_id, country, city, postcode, street, NULL::VARCHAR AS currency, "
            f"NULL::TIMESTAMP AS updated_at FROM {records} WHERE source_system = '{source.system}'"
        )
    if not learned:
        return entity
    address = Comparison.model_validate(
        {
            "name": "address",
            "levels": [
                {
                    "when": "l.postcode_std <> '' AND l.postcode_std = r.postcode_std AND l.street_std = r.street_std",
                    "label": "street+postcode",
                },
                {"when": "l.postcode_std <> '' AND l.postcode_std = r.postcode_std", "label": "postcode"},
                {"when": "l.city_std = r.city_std AND l.street_std = r.street_std", "label": "street+city"},
                {"when": "l.city_std = r.city_std", "label": "city"},
                {"when": "TRUE", "label": "different"},
            ],
        }
    )
    entity.comparisons = [c for c in entity.comparisons if c.name not in ("postcode", "city", "street")] + [address]
    for comparison in entity.comparisons:
        for level in comparison.levels:
            level.weight = None
    return entity


def build_projects(
    spec: Scale,
    truth_customers: pl.DataFrame,
    clients: pl.DataFrame,
    erp_customers: pl.DataFrame,
    rng: np.random.Generator,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """PSA projects and ERP projects. Codes differ in format: PSA `P-24-0012`, ERP `PR240012`."""
    n = max(1, int(spec.customers * spec.projects_per_customer))
    owners = rng.integers(0, spec.customers, n)
    truth_rows = truth_customers.to_dicts()
    first_client = clients.group_by("true_id").agg(pl.col("client_id").sort()).to_dicts()
    client_map = {row["true_id"]: row["client_id"] for row in first_client}
    erp_cust = erp_customers.group_by("true_id").agg(pl.col("cust_no").sort()).to_dicts()
    cust_map = {row["true_id"]: row["cust_no"] for row in erp_cust}
    start = spec.end_date - dt.timedelta(days=30 * spec.months)
    psa_rows: list[dict[str, Any]] = []
    erp_rows: list[dict[str, Any]] = []
    seq_by_year: dict[int, int] = {}
    for pid in range(1, n + 1):
        customer = truth_rows[int(owners[pid - 1])]
        start_date = start + dt.timedelta(days=int(rng.integers(-200, 30 * spec.months - 20)))
        year = start_date.year % 100
        seq_by_year[year] = seq_by_year.get(year, 0) + int(rng.integers(1, 3))
        seq = seq_by_year[year]
        billing = str(rng.choice(["T&M", "fixed_fee", "milestone"], p=[0.7, 0.15, 0.15]))
        name = f"{customer['body'].split()[0]} {PROJECT_WORDS[int(rng.integers(0, len(PROJECT_WORDS)))]}"
        if rng.random() < 0.3:
            name += f" phase {int(rng.integers(2, 5))}"
        clients_of = client_map[customer["true_id"]]
        client_id = clients_of[-1] if len(clients_of) > 1 and rng.random() < 0.3 else clients_of[0]
        entity = customer["entity"]
        true_id = f"PROJ-{pid:06d}"
        in_erp = customer["true_id"] in cust_map and rng.random() < 0.97
        psa_rows.append(
            {
                "project_id": pid,
                "project_code": f"P-{year:02d}-{seq:04d}",
                "project_name": name,
                "client_id": client_id,
                "billing_type": billing,
                "budget_amount": float(rng.integers(20, 800)) * 1000.0,
                "currency": customer["currency"],
                "legal_entity": PSA_LEGAL_ENTITY[entity],
                "status": "active" if in_erp else "planned",
                "start_date": start_date,
                "end_date": None,
                "true_id": true_id,
                "customer_true_id": customer["true_id"],
                "in_erp": in_erp,
            }
        )
        if not in_erp:
            continue
        cc = COMPANY_CODE_OF[entity]
        cust_nos = cust_map[customer["true_id"]]
        description = name.upper()[:40] if rng.random() < 0.5 else drift.typo(name, rng) if rng.random() < 0.2 else name
        erp_rows.append(
            {
                "proj_no": f"PR{year:02d}{seq:04d}",
                "cust_no": cust_nos[0],
                "company_code": cc,
                "description": description,
                "currency": customer["currency"],
                "status": "A",
                "start_date": start_date,
                "true_id": true_id,
            }
        )
        if rng.random() < 0.01:  # created twice in the ERP under a second number
            erp_rows.append(
                {
                    "proj_no": f"PR{year:02d}{9000 + pid % 1000:04d}",
                    "cust_no": cust_nos[-1],
                    "company_code": cc,
                    "description": name,
                    "currency": customer["currency"],
                    "status": "A",
                    "start_date": start_date,
                    "true_id": true_id,
                }
            )
    erp = pl.DataFrame(erp_rows).unique("proj_no", keep="first", maintain_order=True)
    return pl.DataFrame(psa_rows), erp


def build_resources(spec: Scale, rng: np.random.Generator) -> tuple[pl.DataFrame, pl.DataFrame]:
    """PSA resources (`EMP-01234`) and ERP employees (`E01234`), with rehires holding two numbers."""
    psa_rows: list[dict[str, Any]] = []
    erp_rows: list[dict[str, Any]] = []
    used_emails: set[str] = set()
    entities = list(PSA_LEGAL_ENTITY)
    for rid in range(1, spec.resources + 1):
        first = FIRST_NAMES[int(rng.integers(0, len(FIRST_NAMES)))]
        last = LAST_NAMES[int(rng.integers(0, len(LAST_NAMES)))]
        base_email = f"{first}.{last}".lower().replace("ü", "ue").replace(" ", "")
        email = f"{base_email}@acme-consulting.com"
        k = 2
        while email in used_emails:
            email = f"{base_email}{k}@acme-consulting.com"
            k += 1
        used_emails.add(email)
        category = int(rng.choice(len(LABOR_CATEGORIES), p=[0.2, 0.3, 0.2, 0.15, 0.1, 0.05]))
        entity = entities[int(rng.integers(0, len(entities)))]
        ccy = CCY[entity]
        bill = round(float(CATEGORY_RATES[category]) / USD_PER[ccy] * float(rng.uniform(0.9, 1.1)), 0)
        cost = round(bill * float(rng.uniform(0.45, 0.6)), 2)
        number = rid * 3 + 1000
        true_id = f"RES-{rid:06d}"
        full = f"{last}, {first}" if rng.random() < 0.3 else f"{first} {last}"
        psa_rows.append(
            {
                "resource_id": rid,
                "employee_number": f"EMP-{number:05d}",
                "full_name": full,
                "email": email if rng.random() > 0.03 else None,
                "labor_category": LABOR_CATEGORIES[category],
                "cost_rate": cost,
                "bill_rate": bill,
                "currency": ccy,
                "legal_entity": PSA_LEGAL_ENTITY[entity],
                "active": True,
                "true_id": true_id,
            }
        )
        cc = COMPANY_CODE_OF[entity]
        erp_first, erp_last = drift.vary_person(first, last, rng)
        erp_rows.append(
            {
                "emp_no": f"E{number:05d}",
                "first_name": erp_first,
                "last_name": erp_last,
                "email": None if rng.random() < 0.15 else (email.upper() if rng.random() < 0.3 else email),
                "company_code": cc,
                "cost_center": f"CC{cc[0]}{category:02d}",
                "hire_date": spec.end_date - dt.timedelta(days=int(rng.integers(100, 4000))),
                "true_id": true_id,
                "cost_rate": cost,
            }
        )
        if rng.random() < 0.02:  # rehired under a new employee number
            erp_rows.append(
                {
                    "emp_no": f"E{90000 + rid:05d}",
                    "first_name": first,
                    "last_name": last,
                    "email": email if rng.random() < 0.7 else None,
                    "company_code": cc,
                    "cost_center": f"CC{cc[0]}{category:02d}",
                    "hire_date": spec.end_date - dt.timedelta(days=int(rng.integers(10, 90))),
                    "true_id": true_id,
                    "cost_rate": cost,
                }
            )
    return pl.DataFrame(psa_rows), pl.DataFrame(erp_rows)


# ---------------------------------------------------------------- transactions (vectorised)


def _period(col: pl.Expr) -> pl.Expr:
    return col.dt.strftime("%Y-%m")


def _pick_disjoint(
    rng: np.random.Generator, candidates: np.ndarray, fractions: dict[str, float]
) -> dict[str, np.ndarray]:
    """Draw disjoint random subsets of `candidates`, one per break type."""
    shuffled = rng.permutation(candidates)
    out: dict[str, np.ndarray] = {}
    start = 0
    for name, fraction in fractions.items():
        count = max(1, int(round(len(candidates) * fraction))) if len(candidates) > 50 else 0
        out[name] = np.sort(shuffled[start : start + count])
        start += count
    return out


def build_time(
    spec: Scale,
    projects: pl.DataFrame,
    resources: pl.DataFrame,
    employees: pl.DataFrame,
    erp_projects: pl.DataFrame,
    rng: np.random.Generator,
) -> tuple[pl.DataFrame, pl.DataFrame, list[pl.DataFrame]]:
    """PSA time entries and ERP labor postings with planted breaks; returns (time, postings, manifest parts)."""
    active = projects.filter(pl.col("in_erp"))
    n = spec.time_entries
    p_idx = rng.integers(0, active.height, n)
    r_idx = rng.integers(0, resources.height, n)
    start = spec.end_date - dt.timedelta(days=30 * spec.months)
    days = rng.integers(0, (spec.end_date - start).days + 1, n)
    hours = rng.choice(
        np.array([1, 2, 3, 4, 5, 6, 7, 8, 2.5, 3.5, 4.5, 7.5, 0.5, 1.5]),
        n,
        p=[0.05, 0.08, 0.08, 0.14, 0.08, 0.08, 0.08, 0.26, 0.03, 0.03, 0.03, 0.03, 0.02, 0.01],
    )
    status = rng.choice(np.array(["approved", "submitted", "draft", "rejected"]), n, p=[0.86, 0.06, 0.03, 0.05])
    proj = active.select("project_id", "project_code", "currency", "legal_entity", "billing_type")[p_idx]
    res = resources.select("resource_id", "bill_rate", "cost_rate", "currency")[r_idx]
    factor = np.array([USD_PER[c] for c in res["currency"].to_list()]) / np.array(
        [USD_PER[c] for c in proj["currency"].to_list()]
    )
    bill_rate = np.round(res["bill_rate"].to_numpy() * factor, 2)
    cost_rate = np.round(res["cost_rate"].to_numpy() * factor, 2)
    work_date = pl.Series(np.datetime64(start) + days.astype("timedelta64[D]")).cast(pl.Date)
    time = pl.DataFrame(
        {
            "entry_id": np.arange(1, n + 1, dtype=np.int64) * 7 + 100_000,
            "resource_id": res["resource_id"],
            "project_id": proj["project_id"],
            "work_date": work_date,
            "hours": hours,
            "bill_rate": bill_rate,
            "cost_rate": cost_rate,
            "amount": np.round(hours * bill_rate, 2),
            "cost_amount": np.round(hours * cost_rate, 2),
            "currency": proj["currency"],
            "billable": rng.random(n) < 0.9,
            "status": status,
        }
    ).with_columns(
        approved_at=pl.when(pl.col("status") == "approved")
        .then(pl.col("work_date").cast(pl.Datetime("us")) + pl.duration(days=3, hours=17))
        .otherwise(None),
    )

    # ERP side: every approved entry is posted once, through the interface, unless planted otherwise.
    emp_of = employees.group_by("true_id").agg(pl.col("emp_no").sort().first())
    res_emp = resources.select("resource_id", "true_id").join(emp_of, on="true_id").drop("true_id")
    proj_map = erp_projects.group_by("true_id").agg(pl.col("proj_no", "company_code").sort_by("proj_no").first())
    proj_keys = (
        active.select("project_id", "project_code", "true_id", "legal_entity")
        .join(proj_map, on="true_id")
        .drop("true_id")
    )
    approved = (
        time.filter(pl.col("status") == "approved").join(res_emp, on="resource_id").join(proj_keys, on="project_id")
    )
    picks = _pick_disjoint(
        rng,
        approved["entry_id"].to_numpy(),
        {
            "missing_in_erp": 0.006,
            "duplicate_posting": 0.003,
            "quantity_mismatch": 0.003,
            "amount_mismatch": 0.003,
            "period_mismatch": 0.003,
        },
    )
    post = approved.filter(~pl.col("entry_id").is_in(picks["missing_in_erp"]))
    post = post.with_columns(
        fiscal_period=_period(pl.col("work_date")),
        post_hours=pl.col("hours"),
        post_amount=pl.col("amount"),
    )
    qty = pl.col("entry_id").is_in(picks["quantity_mismatch"])
    amt = pl.col("entry_id").is_in(picks["amount_mismatch"])
    per = pl.col("entry_id").is_in(picks["period_mismatch"])
    post = post.with_columns(
        post_hours=pl.when(qty)
        .then(pl.col("hours") + pl.lit(0.5) * (pl.col("entry_id") % 4 + 1))
        .otherwise(pl.col("hours")),
    ).with_columns(
        post_amount=pl.when(qty)
        .then((pl.col("post_hours") * pl.col("bill_rate")).round(2))
        .when(amt)
        .then((pl.col("amount") * 1.1 + 25).round(2))
        .otherwise(pl.col("amount")),
        fiscal_period=pl.when(per)
        .then(_period(pl.col("work_date").dt.offset_by("1mo")))
        .otherwise(pl.col("fiscal_period")),
    )
    dups = post.filter(pl.col("entry_id").is_in(picks["duplicate_posting"]))
    post = pl.concat([post, dups])
    # Postings with no approved PSA entry behind them: time rejected after it was posted, and manual postings.
    rejected = (
        time.filter(pl.col("status") == "rejected").join(res_emp, on="resource_id").join(proj_keys, on="project_id")
    )
    n_orphans = max(1, int(approved.height * 0.002)) if approved.height > 50 else 0
    orphans = rejected.sample(n=min(n_orphans, rejected.height), seed=spec.seed).with_columns(
        fiscal_period=_period(pl.col("work_date")), post_hours=pl.col("hours"), post_amount=pl.col("amount")
    )
    manual = orphans.head(orphans.height // 3).with_columns(entry_id=pl.lit(None, dtype=pl.Int64))
    orphans = pl.concat([orphans.slice(orphans.height // 3), manual])
    post = pl.concat([post, orphans], how="vertical_relaxed")
    post = post.sample(fraction=1.0, shuffle=True, seed=spec.seed).with_row_index("posting_id", offset=5_000_001)
    postings = post.select(
        pl.col("posting_id").cast(pl.Int64),
        psa_entry_ref=pl.col("entry_id"),
        proj_no=pl.col("proj_no"),
        emp_no=pl.col("emp_no"),
        company_code=pl.col("company_code"),
        work_date=pl.col("work_date"),
        fiscal_period=pl.col("fiscal_period"),
        hours=pl.col("post_hours"),
        rate=pl.col("bill_rate"),
        amount=pl.col("post_amount"),
        cost_amount=(pl.col("post_hours") * pl.col("cost_rate")).round(2),
        currency=pl.col("currency"),
        posted_at=pl.col("approved_at") + pl.duration(hours=2),
    ).with_columns(posted_at=pl.col("posted_at").fill_null(pl.lit(dt.datetime(2026, 10, 31, 23, 0))))

    manifest: list[pl.DataFrame] = []
    for break_type, ids in picks.items():
        rows = approved.filter(pl.col("entry_id").is_in(ids)).select(
            left_key=pl.col("entry_id").cast(pl.String),
            right_key=pl.col("entry_id").cast(pl.String),
            project_code=pl.col("project_code"),
            period=_period(pl.col("work_date")),
            legal_entity=pl.col("legal_entity"),
        )
        if break_type == "missing_in_erp":
            rows = rows.with_columns(right_key=pl.lit(None, dtype=pl.String))
        manifest.append(rows.with_columns(recon=pl.lit("time"), break_type=pl.lit(break_type)))
    orph = postings.filter(
        pl.col("psa_entry_ref").is_null() | pl.col("psa_entry_ref").is_in(rejected["entry_id"].implode())
    ).join(proj_keys.select("proj_no", "project_code", "legal_entity"), on="proj_no")
    manifest.append(
        orph.select(
            left_key=pl.lit(None, dtype=pl.String),
            right_key=pl.col("posting_id").cast(pl.String),
            project_code=pl.col("project_code"),
            period=pl.col("fiscal_period"),
            legal_entity=pl.col("legal_entity"),
            recon=pl.lit("time"),
            break_type=pl.lit("missing_in_psa"),
        )
    )
    return time, postings, manifest


def build_invoices(
    spec: Scale,
    time: pl.DataFrame,
    projects: pl.DataFrame,
    clients: pl.DataFrame,
    erp_projects: pl.DataFrame,
    rng: np.random.Generator,
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, pl.DataFrame, pl.DataFrame, pl.DataFrame, list[pl.DataFrame]]:
    """PSA invoices per project and month (T&M), receivables, lines, payments, credit memos."""
    last_period = spec.end_date.strftime("%Y-%m")
    billable = time.filter((pl.col("status") == "approved") & pl.col("billable")).with_columns(
        period=_period(pl.col("work_date"))
    )
    tm = projects.filter(pl.col("in_erp")).select(
        "project_id", "project_code", "client_id", "currency", "legal_entity", "true_id"
    )
    # The current month is not invoiced yet: its time is unbilled, as it should be.
    to_bill = billable.filter(pl.col("period") < last_period).join(tm, on="project_id")
    # A few entries slip through invoicing: unbilled time older than a month.
    slipped_ids = _pick_disjoint(rng, to_bill["entry_id"].to_numpy(), {"unbilled": 0.004})["unbilled"]
    to_bill = to_bill.filter(~pl.col("entry_id").is_in(slipped_ids))
    inv = to_bill.group_by(
        "project_id", "project_code", "client_id", "currency", "legal_entity", "true_id", "period"
    ).agg(amount=pl.col("amount").sum().round(2), hours=pl.col("hours").sum())
    inv = (
        inv.sort("period", "project_id")
        .with_row_index("invoice_id", offset=1)
        .with_columns(
            pl.col("invoice_id").cast(pl.Int32),
            invoice_number=pl.format(
                "INV-{}-{}", pl.col("period").str.replace("-", ""), pl.col("invoice_id").cast(pl.String).str.zfill(6)
            ),
            invoice_date=(pl.col("period") + "-01").str.to_date().dt.offset_by("1mo"),
        )
    )
    n = inv.height
    age_days = (pl.lit(spec.end_date) - pl.col("invoice_date")).dt.total_days()
    inv = inv.with_columns(
        paid=(pl.Series(rng.random(n)) < 0.85) & (age_days > 45), voided=pl.Series(rng.random(n)) < 0.01
    )
    inv = inv.with_columns(
        status=pl.when(pl.col("voided"))
        .then(pl.lit("void"))
        .when(pl.col("paid"))
        .then(pl.lit("paid"))
        .otherwise(pl.lit("sent"))
    )
    time_with_invoice = time.join(
        to_bill.select("entry_id", "project_id", "period")
        .join(inv.select("invoice_id", "project_id", "period"), on=["project_id", "period"])
        .select("entry_id", "invoice_id"),
        on="entry_id",
        how="left",
    )

    picks = _pick_disjoint(
        rng,
        inv["invoice_id"].to_numpy(),
        {
            "missing_in_erp": 0.01,
            "amount_mismatch": 0.01,
            "status_mismatch": 0.015,
            "currency_mismatch": 0.01,
            "period_mismatch": 0.006,
        },
    )
    erp_proj = erp_projects.group_by("true_id").agg(
        pl.col("proj_no", "cust_no", "company_code").sort_by("proj_no").first()
    )
    ar = inv.filter(~pl.col("invoice_id").is_in(picks["missing_in_erp"])).join(erp_proj, on="true_id")
    cc_ccy = dict(zip(COMPANY_CODES["company_code"].to_list(), COMPANY_CODES["currency"].to_list(), strict=True))
    cc_country = dict(zip(COMPANY_CODES["company_code"].to_list(), COMPANY_CODES["country"].to_list(), strict=True))
    ar = ar.with_columns(
        ccy_company=pl.col("company_code").replace_strict(cc_ccy),
        vat=pl.col("company_code").replace_strict(cc_country).replace_strict(VAT, return_dtype=pl.Float64),
    )
    is_amt = pl.col("invoice_id").is_in(picks["amount_mismatch"])
    is_stat = pl.col("invoice_id").is_in(picks["status_mismatch"])
    is_ccy = pl.col("invoice_id").is_in(picks["currency_mismatch"])
    is_per = pl.col("invoice_id").is_in(picks["period_mismatch"])
    # Currency breaks: booked in a currency that is not the invoice's, converted at the month's rate.
    other_ccy = pl.when(pl.col("currency") == "USD").then(pl.lit("EUR")).otherwise(pl.lit("USD"))
    usd_per = pl.col("currency").replace_strict(USD_PER, return_dtype=pl.Float64)
    ar = ar.with_columns(
        erp_currency=pl.when(is_ccy).then(other_ccy).otherwise(pl.col("currency")),
        net=pl.when(is_amt).then((pl.col("amount") * 0.97 - 10).round(2)).otherwise(pl.col("amount")),
    ).with_columns(
        net=pl.when(is_ccy)
        .then(
            (pl.col("net") * usd_per / pl.col("erp_currency").replace_strict(USD_PER, return_dtype=pl.Float64)).round(2)
        )
        .otherwise(pl.col("net")),
        fiscal_period=pl.when(is_per)
        .then(_period((pl.col("period") + "-01").str.to_date().dt.offset_by("1mo")))
        .otherwise(pl.col("period")),
        erp_status=pl.when(pl.col("status") == "void")
        .then(pl.lit("credited"))
        .when(pl.col("status") == "paid")
        .then(pl.lit("paid"))
        .otherwise(pl.lit("open")),
    )
    # Status out of step: payment recorded in the ERP but not flowed back to the PSA, or the reverse.
    ar = ar.with_columns(
        erp_status=pl.when(is_stat & (pl.col("erp_status") == "paid"))
        .then(pl.lit("open"))
        .when(is_stat & (pl.col("erp_status") == "open"))
        .then(pl.lit("paid"))
        .when(is_stat)
        .then(pl.lit("open"))
        .otherwise(pl.col("erp_status")),
    )
    ar = ar.with_row_index("seq", offset=700001).with_columns(
        invoice_no=pl.format("AR{}", pl.col("seq")),
        tax=(pl.col("net") * pl.col("vat")).round(2),
    )
    # Manual AR invoices with no PSA invoice behind them.
    n_manual = max(1, int(inv.height * 0.005)) if inv.height > 50 else 0
    manual = ar.sample(n=min(n_manual, ar.height), seed=spec.seed + 1).with_columns(
        invoice_no=pl.format("AR9{}", pl.col("seq")),
        invoice_number=pl.lit(None, dtype=pl.String),
        net=(pl.col("net") * 0.5).round(2),
        erp_status=pl.lit("open"),
    )
    manual = manual.with_columns(tax=(pl.col("net") * pl.col("vat")).round(2))
    ar = pl.concat([ar, manual])
    ar_invoices = ar.select(
        "invoice_no",
        psa_invoice_ref=pl.col("invoice_number"),
        cust_no=pl.col("cust_no"),
        proj_no=pl.col("proj_no"),
        company_code=pl.col("company_code"),
        invoice_date=pl.col("invoice_date"),
        due_date=pl.col("invoice_date").dt.offset_by("30d"),
        fiscal_period=pl.col("fiscal_period"),
        currency=pl.col("erp_currency"),
        net_amount=pl.col("net"),
        tax_amount=pl.col("tax"),
        gross_amount=(pl.col("net") + pl.col("tax")).round(2),
        status=pl.col("erp_status"),
    )
    lines = ar.select(
        "invoice_no",
        line_no=pl.lit(1, dtype=pl.Int32),
        description=pl.format("Professional services {}", pl.col("period")),
        quantity=pl.col("hours").round(2),
        unit_price=(pl.col("net") / pl.col("hours")).round(2),
        amount=pl.col("net"),
    )
    payments = ar.filter(pl.col("erp_status") == "paid").select(
        payment_id=pl.col("seq").cast(pl.Int64) + 1_000_000,
        invoice_no=pl.col("invoice_no"),
        cust_no=pl.col("cust_no"),
        payment_date=pl.col("invoice_date").dt.offset_by("28d"),
        amount=(pl.col("net") + pl.col("tax")).round(2),
        currency=pl.col("erp_currency"),
    )
    memos = ar.filter(pl.col("erp_status") == "credited").select(
        memo_no=pl.format("CM{}", pl.col("seq")),
        invoice_no=pl.col("invoice_no"),
        cust_no=pl.col("cust_no"),
        memo_date=pl.col("invoice_date").dt.offset_by("10d"),
        amount=(pl.col("net") + pl.col("tax")).round(2),
        currency=pl.col("erp_currency"),
        reason=pl.lit("Invoice voided in PSA"),
    )
    psa_invoices = inv.select(
        "invoice_id",
        "invoice_number",
        "client_id",
        "project_id",
        "invoice_date",
        "period",
        "currency",
        "amount",
        "status",
    )

    manifest: list[pl.DataFrame] = []
    for break_type, ids in picks.items():
        rows = inv.filter(pl.col("invoice_id").is_in(ids)).select(
            left_key=pl.col("invoice_number"),
            right_key=pl.col("invoice_number") if break_type != "missing_in_erp" else pl.lit(None, dtype=pl.String),
            project_code=pl.col("project_code"),
            period=pl.col("period"),
            legal_entity=pl.col("legal_entity"),
        )
        manifest.append(rows.with_columns(recon=pl.lit("invoices"), break_type=pl.lit(break_type)))
    manifest.append(
        manual.select(
            left_key=pl.lit(None, dtype=pl.String),
            right_key=pl.col("invoice_no"),
            project_code=pl.col("project_code"),
            period=pl.col("fiscal_period"),
            legal_entity=pl.col("legal_entity"),
            recon=pl.lit("invoices"),
            break_type=pl.lit("missing_in_psa"),
        )
    )
    slipped = time.filter(pl.col("entry_id").is_in(slipped_ids)).join(
        projects.select("project_id", "project_code", "legal_entity"), on="project_id"
    )
    manifest.append(
        slipped.select(
            left_key=pl.col("entry_id").cast(pl.String),
            right_key=pl.lit(None, dtype=pl.String),
            project_code=pl.col("project_code"),
            period=_period(pl.col("work_date")),
            legal_entity=pl.col("legal_entity"),
            recon=pl.lit("unbilled"),
            break_type=pl.lit("unbilled_time"),
        )
    )
    return (time_with_invoice, psa_invoices, ar_invoices, lines, payments, memos, manifest)


def build_gl(
    postings: pl.DataFrame, ar_invoices: pl.DataFrame, erp_projects: pl.DataFrame, rng: np.random.Generator
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Revenue from receivables and labour cost from postings, by project and period; plus manual journals."""
    revenue = (
        ar_invoices.group_by("company_code", "proj_no", "fiscal_period", "currency")
        .agg(amount=pl.col("net_amount").sum().round(2))
        .with_columns(account=pl.lit("400000"), doc_type=pl.lit("RV"))
    )
    cost = (
        postings.group_by("company_code", "proj_no", "fiscal_period", "currency")
        .agg(amount=pl.col("cost_amount").sum().round(2))
        .with_columns(account=pl.lit("500000"), doc_type=pl.lit("LC"))
    )
    base = pl.concat([revenue, cost]).sort("proj_no", "fiscal_period", "account")
    # Manual journal entries on a few project-periods: margin differs with no PSA cause.
    picks = _pick_disjoint(rng, np.arange(revenue.height), {"journal": 0.01})["journal"]
    journals = revenue[picks.tolist()].with_columns(
        amount=(pl.col("amount") * -0.05 - 500).round(2), doc_type=pl.lit("JE")
    )
    gl = (
        pl.concat([base, journals])
        .with_row_index("entry_id", offset=9_000_001)
        .with_columns(
            pl.col("entry_id").cast(pl.Int64),
            posting_date=(pl.col("fiscal_period") + "-28").str.to_date(),
            doc_ref=pl.lit(None, dtype=pl.String),
        )
    )
    proj_codes = erp_projects.select("proj_no", "true_id")
    manifest = journals.join(proj_codes, on="proj_no").select(
        left_key=pl.lit(None, dtype=pl.String),
        right_key=pl.col("proj_no"),
        project_code=pl.col("proj_no"),
        period=pl.col("fiscal_period"),
        legal_entity=pl.col("company_code"),
        recon=pl.lit("margin"),
        break_type=pl.lit("manual_journal"),
    )
    return gl.select(
        "entry_id",
        "company_code",
        "account",
        "proj_no",
        "fiscal_period",
        "posting_date",
        "amount",
        "currency",
        "doc_type",
        "doc_ref",
    ), manifest


def build_fx(spec: Scale, rng: np.random.Generator) -> pl.DataFrame:
    start = spec.end_date - dt.timedelta(days=30 * spec.months + 220)
    dates = pl.date_range(start, spec.end_date + dt.timedelta(days=62), "1d", eager=True)
    frames = []
    for ccy, usd_value in USD_PER.items():
        walk = np.exp(np.cumsum(rng.normal(0, 0.003, dates.len())))
        to_usd = np.round(usd_value * walk if ccy != "USD" else np.ones(dates.len()), 8)
        frames.append(pl.DataFrame({"rate_date": dates, "from_ccy": ccy, "to_ccy": "USD", "rate": to_usd}))
    usd = pl.concat(frames)
    cross = (
        usd.join(usd, on="rate_date", suffix="_b")
        .filter(pl.col("from_ccy") != pl.col("from_ccy_b"))
        .select("rate_date", "from_ccy", to_ccy=pl.col("from_ccy_b"), rate=(pl.col("rate") / pl.col("rate_b")).round(8))
    )
    return pl.concat([usd.filter(pl.col("from_ccy") != "USD"), cross.filter(pl.col("to_ccy") != "USD")])


# ---------------------------------------------------------------- loading


def _pg_copy(conn: Any, table: str, frame: pl.DataFrame) -> None:
    buf = io.BytesIO()
    frame.write_csv(buf, null_value="", datetime_format="%Y-%m-%dT%H:%M:%S%.f")
    buf.seek(0)
    cols = ", ".join(f'"{c}"' for c in frame.columns)
    with conn.cursor() as cur, cur.copy(f"COPY {table} ({cols}) FROM STDIN WITH (FORMAT csv, HEADER true)") as copy:
        while chunk := buf.read(1 << 20):
            copy.write(chunk)


def _my_load(conn: Any, table: str, frame: pl.DataFrame) -> None:
    with tempfile.NamedTemporaryFile(suffix=".csv", delete=True) as tmp:
        frame.write_csv(
            tmp.name,
            null_value=r"\N",
            include_header=False,
            quote_style="non_numeric",
            datetime_format="%Y-%m-%d %H:%M:%S%.f",
        )
        cols = ", ".join(f"`{c}`" for c in frame.columns)
        with conn.cursor() as cur:
            cur.execute(
                f"LOAD DATA LOCAL INFILE %s INTO TABLE `{table}` CHARACTER SET utf8mb4 "
                "FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '\"' "
                f"LINES TERMINATED BY '\\n' ({cols})",
                (tmp.name,),
            )


def seed(
    state: SandboxState, spec: Scale, manifest_dir: Path, reset: bool = True, console: Console | None = None
) -> dict[str, Any]:
    """Generate the firm, load both databases, write the manifest; return row counts."""
    rng = np.random.default_rng(spec.seed)
    console = console or Console(quiet=True)
    steps = ["master data", "time", "invoices", "ledger", "load PSA", "load ERP", "manifest"]
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task("seeding", total=len(steps))

        def step(name: str) -> None:
            progress.update(task, description=f"seeding: {name}")

        step("master data")
        truth, clients, customers = build_customers(spec, rng)
        projects, erp_projects = build_projects(spec, truth, clients, customers, rng)
        resources, employees = build_resources(spec, rng)
        progress.advance(task)
        step("time")
        time, postings, time_manifest = build_time(spec, projects, resources, employees, erp_projects, rng)
        progress.advance(task)
        step("invoices")
        time, psa_invoices, ar_invoices, lines, payments, memos, inv_manifest = build_invoices(
            spec, time, projects, clients, erp_projects, rng
        )
        progress.advance(task)
        step("ledger")
        gl, gl_manifest = build_gl(postings, ar_invoices, erp_projects, rng)
        fx = build_fx(spec, rng)
        rate_cards = (
            projects.join(resources.select("labor_category").unique(), how="cross")
            .filter(pl.col("project_id") % 3 == 0)
            .with_row_index("rate_card_id", offset=1)
            .select(
                pl.col("rate_card_id").cast(pl.Int32),
                "project_id",
                "labor_category",
                bill_rate=pl.lit(150.0),
                currency=pl.col("currency"),
                valid_from=pl.col("start_date"),
            )
        )
        milestones = projects.filter(pl.col("billing_type") == "milestone").select(
            milestone_id=pl.col("project_id"),
            project_id=pl.col("project_id"),
            name=pl.lit("Go-live"),
            due_date=pl.col("start_date").dt.offset_by("90d"),
            amount=(pl.col("budget_amount") * 0.3).round(2),
            status=pl.lit("open"),
        )
        n_exp = max(10, spec.time_entries // 20)
        exp_src = time.sample(n=min(n_exp, time.height), seed=spec.seed)
        expenses = exp_src.select(
            expense_id=pl.col("entry_id"),
            resource_id="resource_id",
            project_id="project_id",
            expense_date="work_date",
            category=pl.lit("travel"),
            amount=(pl.col("hours") * 23.5).round(2),
            currency="currency",
            billable="billable",
            status=pl.lit("approved"),
        )
        progress.advance(task)

        step("load PSA")
        if reset:
            reset_data(state)
        with pg_app_connect(state, autocommit=False) as conn:
            _pg_copy(conn, "clients", clients.drop("true_id"))
            _pg_copy(conn, "projects", projects.drop("true_id", "customer_true_id", "in_erp"))
            _pg_copy(conn, "resources", resources.drop("true_id"))
            _pg_copy(conn, "rate_cards", rate_cards)
            _pg_copy(conn, "invoices", psa_invoices)
            _pg_copy(conn, "time_entries", time)
            _pg_copy(conn, "expenses", expenses)
            _pg_copy(conn, "milestones", milestones)
            conn.commit()
            conn.autocommit = True
            conn.execute("ANALYZE")
        progress.advance(task)
        step("load ERP")
        with my_app_connect(state, autocommit=False) as conn:
            _my_load(conn, "company_codes", COMPANY_CODES)
            _my_load(conn, "customers", customers.drop("true_id"))
            _my_load(conn, "projects", erp_projects.drop("true_id"))
            _my_load(conn, "employees", employees.drop("true_id", "cost_rate"))
            _my_load(conn, "labor_postings", postings)
            _my_load(conn, "ar_invoices", ar_invoices)
            _my_load(conn, "ar_invoice_lines", lines)
            _my_load(conn, "payments", payments)
            _my_load(conn, "credit_memos", memos)
            _my_load(conn, "gl_entries", gl)
            _my_load(conn, "fx_rates", fx)
            conn.commit()
        progress.advance(task)

        step("manifest")
        entities = pl.concat(
            [
                clients.select(
                    entity=pl.lit("customer"),
                    source_system=pl.lit("psa"),
                    source_id=pl.col("client_id").cast(pl.String),
                    true_id="true_id",
                ),
                customers.select(
                    entity=pl.lit("customer"), source_system=pl.lit("erp"), source_id="cust_no", true_id="true_id"
                ),
                projects.select(
                    entity=pl.lit("project"),
                    source_system=pl.lit("psa"),
                    source_id=pl.col("project_id").cast(pl.String),
                    true_id="true_id",
                ),
                erp_projects.select(
                    entity=pl.lit("project"), source_system=pl.lit("erp"), source_id="proj_no", true_id="true_id"
                ),
                resources.select(
                    entity=pl.lit("resource"),
                    source_system=pl.lit("psa"),
                    source_id=pl.col("resource_id").cast(pl.String),
                    true_id="true_id",
                ),
                employees.select(
                    entity=pl.lit("resource"), source_system=pl.lit("erp"), source_id="emp_no", true_id="true_id"
                ),
            ]
        )
        breaks = pl.concat([*time_manifest, *inv_manifest, gl_manifest], how="diagonal_relaxed").select(
            "recon", "break_type", "left_key", "right_key", "project_code", "period", "legal_entity"
        )
        manifest_dir.mkdir(parents=True, exist_ok=True)
        entities.write_parquet(manifest_dir / "entities.parquet")
        breaks.write_parquet(manifest_dir / "breaks.parquet")
        summary: dict[str, Any] = {
            "scale": asdict(spec) | {"end_date": spec.end_date.isoformat()},
            "psa": {
                "clients": clients.height,
                "projects": projects.height,
                "resources": resources.height,
                "time_entries": time.height,
                "invoices": psa_invoices.height,
                "expenses": expenses.height,
                "milestones": milestones.height,
                "rate_cards": rate_cards.height,
            },
            "erp": {
                "company_codes": COMPANY_CODES.height,
                "customers": customers.height,
                "projects": erp_projects.height,
                "employees": employees.height,
                "labor_postings": postings.height,
                "ar_invoices": ar_invoices.height,
                "ar_invoice_lines": lines.height,
                "payments": payments.height,
                "credit_memos": memos.height,
                "gl_entries": gl.height,
                "fx_rates": fx.height,
            },
            "true_entities": {
                "customer": truth.height,
                "project": projects.height,
                "resource": resources.height,
            },
            "planted_breaks": {
                f"{r['recon']}.{r['break_type']}": r["len"]
                for r in breaks.group_by("recon", "break_type").len().sort("recon", "break_type").to_dicts()
            },
        }
        (manifest_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        progress.advance(task)
    flat = {f"psa.{k}": v for k, v in summary["psa"].items()} | {f"erp.{k}": v for k, v in summary["erp"].items()}
    flat |= {f"planted {k}": v for k, v in summary["planted_breaks"].items()}
    return flat
