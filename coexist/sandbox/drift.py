"""How real master data drifts between two systems: the spelling variants the generator plants.

Each function takes a clean value and a random generator and returns what a clerk in the
other system would have typed. They are the adversary of `masterdata/`, so they aim to be
as hard as real data, not easy for the matcher.
"""

from __future__ import annotations

import numpy as np

LEGAL_SUFFIXES: dict[str, list[str]] = {
    "US": ["Inc", "LLC", "Corp"],
    "DE": ["GmbH", "AG", "GmbH & Co. KG"],
    "GB": ["Ltd", "PLC", "LLP"],
    "FR": ["SAS", "SA", "SARL"],
    "NL": ["B.V.", "N.V."],
}

SUFFIX_VARIANTS: dict[str, list[str]] = {
    "Inc": ["Inc.", "Incorporated", "INC", "inc"],
    "LLC": ["L.L.C.", "Llc", "LLC."],
    "Corp": ["Corp.", "Corporation", "CORP"],
    "GmbH": ["G.m.b.H.", "Gmbh", "GMBH", "mbH"],
    "AG": ["A.G.", "Aktiengesellschaft"],
    "GmbH & Co. KG": ["GmbH & Co KG", "GmbH u. Co. KG", "GMBH & CO. KG"],
    "Ltd": ["Ltd.", "Limited", "LTD"],
    "PLC": ["plc", "P.L.C.", "Public Limited Company"],
    "LLP": ["L.L.P.", "llp"],
    "SAS": ["S.A.S.", "sas"],
    "SA": ["S.A.", "Société Anonyme"],
    "SARL": ["S.A.R.L.", "Sarl"],
    "B.V.": ["BV", "B.V"],
    "N.V.": ["NV", "N.V"],
}

WORD_VARIANTS: dict[str, list[str]] = {
    "and": ["&", "+"],
    "&": ["and"],
    "International": ["Intl", "Int'l", "Intl."],
    "Technologies": ["Tech", "Technology", "Techn."],
    "Manufacturing": ["Mfg", "Mfg."],
    "Services": ["Svcs", "Service"],
    "Company": ["Co", "Co."],
    "Consulting": ["Consultants", "Consult."],
    "Systems": ["Sys", "System"],
    "Associates": ["Assoc.", "Assocs"],
    "Group": ["Grp", "Gruppe"],
    "Holdings": ["Hldgs", "Holding"],
    "Laboratories": ["Labs", "Lab"],
    "Solutions": ["Soln", "Solution"],
}

NICKNAMES: dict[str, list[str]] = {
    "William": ["Bill", "Will"],
    "Robert": ["Bob", "Rob"],
    "Elizabeth": ["Liz", "Beth"],
    "Katherine": ["Kate", "Kathy"],
    "Michael": ["Mike"],
    "Jennifer": ["Jen", "Jenny"],
    "Thomas": ["Tom"],
    "Christopher": ["Chris"],
    "Alexander": ["Alex"],
    "Margaret": ["Maggie", "Meg"],
    "Johannes": ["Hannes"],
    "Stefan": ["Steffen"],
    "Daniel": ["Dan", "Danny"],
    "Joseph": ["Joe"],
    "Andrew": ["Andy"],
    "Patricia": ["Pat", "Trish"],
    "Susanne": ["Susi"],
    "Nicholas": ["Nick"],
}

_KEYBOARD_NEIGHBOURS = {
    "a": "sqw",
    "b": "vng",
    "c": "xvd",
    "d": "sfe",
    "e": "wrd",
    "f": "dgr",
    "g": "fht",
    "h": "gjy",
    "i": "uok",
    "j": "hku",
    "k": "jli",
    "l": "kop",
    "m": "nj",
    "n": "bmh",
    "o": "ipl",
    "p": "ol",
    "r": "etf",
    "s": "adw",
    "t": "ryg",
    "u": "yij",
    "v": "cbf",
    "w": "qes",
    "x": "zc",
    "y": "tuh",
    "z": "xa",
}


def typo(text: str, rng: np.random.Generator) -> str:
    """One keyboard slip: substitution by a neighbour key, transposition, deletion or doubling."""
    letters = [i for i, ch in enumerate(text) if ch.isalpha()]
    if len(letters) < 4:
        return text
    pos = int(letters[int(rng.integers(1, len(letters)))])
    kind = int(rng.integers(0, 4))
    ch = text[pos]
    if kind == 0:
        pool = _KEYBOARD_NEIGHBOURS.get(ch.lower(), "e")
        new = pool[int(rng.integers(0, len(pool)))]
        return text[:pos] + (new.upper() if ch.isupper() else new) + text[pos + 1 :]
    if kind == 1 and pos + 1 < len(text) and text[pos + 1].isalpha():
        return text[:pos] + text[pos + 1] + ch + text[pos + 2 :]
    if kind == 2:
        return text[:pos] + text[pos + 1 :]
    return text[:pos] + ch + text[pos:]


def vary_company(name: str, suffix: str, rng: np.random.Generator, strength: float = 1.0) -> str:
    """A company name as another system might hold it: suffix variant, abbreviation, case, typo."""
    words = name.split()
    out: list[str] = []
    for word in words:
        variants = WORD_VARIANTS.get(word)
        if variants and rng.random() < 0.45 * strength:
            out.append(variants[int(rng.integers(0, len(variants)))])
        else:
            out.append(word)
    body = " ".join(out)
    roll = rng.random()
    if roll < 0.15 * strength:
        full = body
    elif roll < 0.6 * strength:
        pool = SUFFIX_VARIANTS.get(suffix, [suffix])
        full = f"{body} {pool[int(rng.integers(0, len(pool)))]}"
    else:
        full = f"{body} {suffix}"
    if rng.random() < 0.1 * strength:
        full = full.replace(" ", ", ", 1) if "," not in full and rng.random() < 0.3 else full
    if rng.random() < 0.25 * strength:
        full = typo(full, rng)
    if rng.random() < 0.08 * strength:
        full = f"The {full}" if not full.startswith("The ") else full[4:]
    return full


def format_tax_id(tax_id: str, rng: np.random.Generator) -> str:
    """Tax numbers retyped: spaces, dots, dashes, lower case, country prefix dropped."""
    kind = int(rng.integers(0, 5))
    if kind == 0:
        return " ".join(tax_id[i : i + 3] for i in range(0, len(tax_id), 3))
    if kind == 1:
        return tax_id.lower()
    if kind == 2 and tax_id[:2].isalpha():
        return tax_id[2:]
    if kind == 3:
        return "-".join(tax_id[i : i + 4] for i in range(0, len(tax_id), 4))
    return ".".join(tax_id[i : i + 2] for i in range(0, len(tax_id), 2))


def vary_person(first: str, last: str, rng: np.random.Generator) -> tuple[str, str]:
    """A person's name in the other system: nickname, typo, hyphenated or dropped second surname."""
    if first in NICKNAMES and rng.random() < 0.35:
        pool = NICKNAMES[first]
        first = pool[int(rng.integers(0, len(pool)))]
    if rng.random() < 0.12:
        last = typo(last, rng)
    if rng.random() < 0.05:
        first = typo(first, rng)
    if "-" in last and rng.random() < 0.5:
        last = last.split("-")[0]
    return first, last


def vary_street(street: str, rng: np.random.Generator) -> str:
    replacements = [
        ("Street", "St."),
        ("Road", "Rd"),
        ("Avenue", "Ave"),
        ("straße", "str."),
        ("Strasse", "Str."),
        ("Lane", "Ln"),
        ("rue", "r."),
    ]
    for long, short in replacements:
        if long in street and rng.random() < 0.6:
            return street.replace(long, short)
    return street.upper() if rng.random() < 0.2 else street
