"""Synthetic people with French-style identities: names, NIR with a valid key, INS, address, phone."""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import asdict, dataclass

from hdh_assets.pseudonymisation.identifiers import INS_NIR_OID, nir_key

FAMILY_NAMES = (
    "Martin",
    "Bernard",
    "Thomas",
    "Petit",
    "Robert",
    "Richard",
    "Durand",
    "Dubois",
    "Moreau",
    "Laurent",
    "Simon",
    "Michel",
    "Lefèvre",
    "Leroy",
    "Roux",
    "David",
    "Bertrand",
    "Morel",
    "Fournier",
    "Girard",
    "Bonnet",
    "Dupont",
    "Lambert",
    "Fontaine",
    "Rousseau",
    "Vincent",
    "Müller",
    "Lefebvre-Garnier",
    "Chevalier",
    "Faure",
    "André",
    "Mercier",
    "Blanc",
    "Guérin",
    "Boyer",
    "Garnier",
    "Chevallier",
    "François",
    "Legrand",
    "Gauthier",
    "N'Diaye",
    "Le Goff",
)
GIVEN_NAMES = {
    "F": (
        "Marie",
        "Camille",
        "Léa",
        "Manon",
        "Chloé",
        "Inès",
        "Sarah",
        "Hélène",
        "Élodie",
        "Anne-Sophie",
        "Nathalie",
        "Isabelle",
        "Sylvie",
        "Aurélie",
        "Zoé",
        "Louise",
        "Maëlle",
    ),
    "M": (
        "Jean",
        "Pierre",
        "Lucas",
        "Hugo",
        "Louis",
        "Gabriel",
        "Théo",
        "Nicolas",
        "Julien",
        "Jean-Pierre",
        "François",
        "Mathieu",
        "Noël",
        "Raphaël",
        "Mohamed",
        "Yanis",
        "Éric",
    ),
}
# (department code used in the NIR, city, postal code)
PLACES = (
    ("75", "Paris", "75013"),
    ("69", "Lyon", "69003"),
    ("13", "Marseille", "13005"),
    ("31", "Toulouse", "31000"),
    ("33", "Bordeaux", "33000"),
    ("59", "Lille", "59000"),
    ("67", "Strasbourg", "67000"),
    ("44", "Nantes", "44000"),
    ("35", "Rennes", "35000"),
    ("2A", "Ajaccio", "20000"),
    ("2B", "Bastia", "20200"),
    ("06", "Nice", "06000"),
    ("34", "Montpellier", "34000"),
    ("21", "Dijon", "21000"),
    ("87", "Limoges", "87000"),
)
STREETS = (
    "rue de la République",
    "avenue Jean Jaurès",
    "boulevard Victor Hugo",
    "rue Pasteur",
    "place de la Mairie",
    "chemin des Vignes",
    "rue du Général Leclerc",
)


@dataclass(frozen=True)
class Person:
    """One synthetic identity, as a hospital, a registry and the health insurer know it."""

    index: int
    family_name: str
    given_names: tuple[str, ...]
    sex: str  # "F" or "M"
    birth_date: dt.date
    nir: str  # 15 characters: 13-character body + 2-digit key
    ins_oid: str
    address_line: str
    postal_code: str
    city: str
    phone: str
    email: str
    hospital_patient_id: str  # the hospital's local id (IPP)

    @property
    def dicom_name(self) -> str:
        return f"{self.family_name.upper()}^{' '.join(self.given_names)}"

    def to_json(self) -> dict:
        record = asdict(self)
        record["birth_date"] = self.birth_date.isoformat()
        record["given_names"] = list(self.given_names)
        return record


def make_nir(rng: random.Random, sex: str, birth: dt.date, department: str) -> str:
    body = (
        ("2" if sex == "F" else "1")
        + f"{birth.year % 100:02d}{birth.month:02d}"
        + department
        + f"{rng.randint(1, 999):03d}{rng.randint(1, 999):03d}"
    )
    return body + nir_key(body)


def _ascii(text: str) -> str:
    table = str.maketrans("àâäéèêëîïôöùûüçÉÈ", "aaaeeeeiioouuucEE")
    return text.translate(table).replace(" ", "").replace("'", "").lower()


def make_population(size: int, seed: int) -> list[Person]:
    """``size`` people, the same for the same seed."""
    rng = random.Random(f"hdh-people:{seed}")
    people = []
    used_nirs: set[str] = set()
    for index in range(size):
        sex = rng.choice("FM")
        given = [rng.choice(GIVEN_NAMES[sex])]
        if rng.random() < 0.3:
            given.append(rng.choice(GIVEN_NAMES[sex]))
        family = rng.choice(FAMILY_NAMES)
        birth = dt.date(1935, 1, 1) + dt.timedelta(days=rng.randint(0, 365 * 85))
        department, city, postal_code = rng.choice(PLACES)
        nir = make_nir(rng, sex, birth, department)
        while nir in used_nirs:
            nir = make_nir(rng, sex, birth, department)
        used_nirs.add(nir)
        people.append(
            Person(
                index=index,
                family_name=family,
                given_names=tuple(given),
                sex=sex,
                birth_date=birth,
                nir=nir,
                ins_oid=INS_NIR_OID,
                address_line=f"{rng.randint(1, 180)} {rng.choice(STREETS)}",
                postal_code=postal_code,
                city=city,
                phone=f"+33 6 {rng.randint(10, 99)} {rng.randint(10, 99)} "
                f"{rng.randint(10, 99)} {rng.randint(10, 99)}",
                email=f"{_ascii(given[0])}.{_ascii(family)}{index}@example.fr",
                hospital_patient_id=f"IPP{rng.randint(10**7, 10**8 - 1)}",
            )
        )
    return people
