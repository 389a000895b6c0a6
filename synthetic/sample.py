"""Generate the whole sample into a landing zone: DICOM, FHIR and claims batches for one population.

Each source's batch is written aside and renamed into place with its ``_READY`` marker, so a
landing-zone sensor never sees half a batch and a rerun replaces a batch rather than adding to it.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hdh_assets.landing.batches import landing_batch
from synthetic.claims import DEFAULT_CHUNK_ROWS, DEFAULT_MONTHS, write_claims
from synthetic.dicom import StudyRecord, write_malformed, write_missing_uid, write_study
from synthetic.fhir import write_fhir
from synthetic.people import make_population

Progress = Callable[[str, int, int | None], None]  # (task, advance, total)


@dataclass(frozen=True)
class SampleConfig:
    seed: int = 42
    people: int = 40
    claims_rows: int = 50_000
    claims_chunk_rows: int = DEFAULT_CHUNK_ROWS
    claims_months: int = DEFAULT_MONTHS  # months of event dates from 2023-01 (files per month)
    imaging_share: float = 0.6
    burned_in_every: int = 8
    batch: str = ""

    @property
    def batch_name(self) -> str:
        return self.batch or f"sample-seed{self.seed}"


@dataclass
class SampleSummary:
    batch: str
    people: int
    dicom_studies: int = 0
    dicom_instances: int = 0
    dicom_burned_in_studies: int = 0
    dicom_malformed_files: int = 0
    fhir_resources: dict[str, int] = field(default_factory=dict)
    claims_rows: int = 0
    claims_files: int = 0
    landing: dict[str, str] = field(default_factory=dict)
    identities: str = ""

    def to_json(self) -> dict:
        return asdict(self)


def _noop(task: str, advance: int, total: int | None) -> None:
    return None


def generate_sample(
    landing: Path, sample_dir: Path, config: SampleConfig, progress: Progress = _noop
) -> SampleSummary:
    """Write the sample under ``landing/{dicom,json,claims}/<batch>/`` and the identity list."""
    people = make_population(config.people, config.seed)
    summary = SampleSummary(batch=config.batch_name, people=len(people))
    rng = random.Random(f"hdh-dicom:{config.seed}")

    studies_by_person: dict[int, list[StudyRecord]] = {}
    with landing_batch(landing / "dicom", config.batch_name) as folder:
        counter = [0]
        imaged = [p for p in people if rng.random() < config.imaging_share]
        progress("DICOM studies", 0, len(imaged))
        study_number = 0
        for person in imaged:
            for _ in range(rng.choice((1, 1, 2))):
                study_number += 1
                modality = rng.choice(("CT", "MR"))
                day = dt.date(2023, 1, 1) + dt.timedelta(days=rng.randint(0, 729))
                burned_in = study_number % config.burned_in_every == 0
                record = write_study(
                    person,
                    rng,
                    modality,
                    day,
                    folder / f"P{person.index:05d}" / f"ST{study_number:04d}",
                    burned_in,
                    counter,
                )
                studies_by_person.setdefault(person.index, []).append(record)
                summary.dicom_studies += 1
                summary.dicom_instances += record.instances
                summary.dicom_burned_in_studies += int(burned_in)
            progress("DICOM studies", 1, None)
        if summary.dicom_instances:
            example = Path(next(iter(studies_by_person.values()))[0].files[0])
            broken = write_malformed(folder / "misc", example)
            broken.append(write_missing_uid(people[0], rng, folder / "misc"))
            summary.dicom_malformed_files = len(broken)
    summary.landing["dicom"] = str(landing / "dicom" / config.batch_name)

    with landing_batch(landing / "json", config.batch_name) as folder:
        progress("FHIR resources", 0, 1)
        summary.fhir_resources = write_fhir(people, studies_by_person, folder, config.seed)
        progress("FHIR resources", 1, None)
    summary.landing["json"] = str(landing / "json" / config.batch_name)

    with landing_batch(landing / "claims", config.batch_name) as folder:
        progress("claims rows", 0, config.claims_rows)
        files = write_claims(
            people,
            config.claims_rows,
            folder,
            config.seed,
            config.claims_chunk_rows,
            on_chunk=lambda rows: progress("claims rows", rows, None),
            months=config.claims_months,
        )
        summary.claims_rows = config.claims_rows
        summary.claims_files = len(files)
    summary.landing["claims"] = str(landing / "claims" / config.batch_name)

    # For tests and demonstrations only: the platform never reads this file.
    sample_dir.mkdir(parents=True, exist_ok=True)
    identities = sample_dir / "identities.json"
    identities.write_text(
        json.dumps(
            {"seed": config.seed, "people": [p.to_json() for p in people]},
            ensure_ascii=False,
            indent=1,
        ),
        encoding="utf-8",
    )
    summary.identities = str(identities)
    return summary
