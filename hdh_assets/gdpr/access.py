"""Right of access: everything the lake holds on one person, as an archive the DPO sends.

Pure over the lake: one CSV per asset holding the person's rows, and a plain-language README in
French and English explaining the pseudonymised fields and the shifted dates.
"""

from __future__ import annotations

import datetime as dt
import io
import zipfile
from collections.abc import Iterable
from pathlib import Path

import polars as pl
from upath import UPath

from resources.lake.tables import Lake

README = """\
Vos données / Your data
=======================

FRANÇAIS
Cette archive contient toutes les lignes que la plateforme détient sur vous, un fichier CSV par
jeu de données (par exemple clinical__observations.csv pour vos observations cliniques).

- Vous n'y êtes jamais désigné(e) par votre nom ni par votre numéro de sécurité sociale : ils
  sont remplacés par un pseudonyme, « {pseudonym} », calculé avec une clé secrète. Les
  identifiants des examens et documents (UID DICOM, identifiants FHIR) sont remplacés de la
  même façon.
- Toutes les dates de vos données sont décalées de {offset:+d} jours, le même décalage partout,
  pour que les durées entre événements restent exactes. Pour retrouver une date réelle,
  retranchez {offset:+d} jours.
- Votre année de naissance est conservée, pas votre date de naissance complète.
- Les noms, adresses, téléphones et textes libres ne sont jamais conservés.

ENGLISH
This archive holds every row the platform holds on you, one CSV file per data set (for example
clinical__observations.csv for your clinical observations).

- You are never named nor identified by your social security number: both are replaced by a
  pseudonym, "{pseudonym}", computed with a secret key. Identifiers of examinations and
  documents (DICOM UIDs, FHIR ids) are replaced the same way.
- Every date in your data is shifted by {offset:+d} days, the same shift everywhere, so that the
  time between events stays exact. To read a real date, subtract {offset:+d} days.
- Your year of birth is kept, not your full date of birth.
- Names, addresses, phone numbers and free text are never kept.

Request / Demande: {request_id} - exported {exported_at}
Data sets / Jeux de données: {assets}
"""


def person_rows(lake: Path, asset: str, column: str, pseudonym: str) -> pl.DataFrame:
    files = Lake(UPath(lake)).table(asset.split("/")).parquet_files()
    frames = [pl.read_parquet(str(f)).filter(pl.col(column) == pseudonym) for f in files]
    frames = [f for f in frames if f.height]
    return pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()


def _csv(frame: pl.DataFrame) -> bytes:
    flat = frame.with_columns(
        pl.col(c).cast(pl.List(pl.String)).list.join("|")
        for c, t in frame.schema.items()
        if isinstance(t, pl.List)
    )
    buffer = io.BytesIO()
    flat.write_csv(buffer)
    return buffer.getvalue()


def write_access_archive(
    lake: Path,
    indexed: Iterable[tuple[str, str]],
    pseudonym: str,
    offset_days: int,
    request_id: str,
    target: Path,
) -> dict[str, int]:
    """Write ``target`` (a zip); return rows per asset. ``indexed``: (asset, subject column)."""
    rows: dict[str, int] = {}
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for asset, column in sorted(indexed):
            frame = person_rows(lake, asset, column, pseudonym)
            if frame.height:
                archive.writestr(f"{asset.replace('/', '__')}.csv", _csv(frame))
                rows[asset] = frame.height
        archive.writestr(
            "README.txt",
            README.format(
                pseudonym=pseudonym,
                offset=offset_days,
                request_id=request_id,
                exported_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                assets=", ".join(sorted(rows)) or "-",
            ),
        )
    partial.chmod(0o600)
    partial.replace(target)
    return rows
