"""Clinical assets: landed JSON files, then one pseudonymised table per FHIR resource type."""

import shutil
from pathlib import Path

import dagster as dg
import pandera.polars as pa
import polars as pl

from hdh_assets import owners
from hdh_assets.clinical.earlier import RANK, EarlierBatches
from hdh_assets.clinical.flatten import ALL_TABLES, TABLES
from hdh_assets.clinical.ingest import QUARANTINE_SCHEMA, JsonIngestSettings, ingest_json_batch
from hdh_assets.clinical.linkage import unlinked_person_rows
from hdh_assets.clinical.providers import provider_named
from hdh_assets.gdpr.exclusions import excluded_pseudonyms
from hdh_assets.landing.assets import landed_batch, landing_inventory_asset
from hdh_assets.landing.batches import provider_of
from hdh_assets.landing.partitions import BATCH_PARTITIONS
from hdh_assets.pseudonymisation.fhir import Subject
from hdh_assets.validation import documented_columns, pandera_check
from resources.lake.tables import Lake
from resources.platform import HomeResource
from resources.pseudonymisation import PseudonymisationKeyResource

BATCHES = BATCH_PARTITIONS["json"]
FULL_CHECK_ROWS = 2_000_000
PSEUDONYM = r"^[0-9a-f]{32}$"
RESOURCE_TYPE_OF = {table: rtype for rtype, (table, _, _) in TABLES.items()}
DESCRIPTIONS = {
    "patients": "One row per Patient: subject pseudonym, national or provider-scoped, gender, generalised birth date.",
    "encounters": "Encounters with class, type, shifted period and remapped service provider.",
    "conditions": "Conditions (diagnoses) with code, statuses and shifted onset and recording dates.",
    "observations": "Observations with code, shifted effective time and every value[x] variant in typed columns.",
    "observation_components": "Components of Observations (blood pressure, panels), one row each, typed values.",
    "medication_requests": "Medication requests with medication code, status, intent and shifted authoring date.",
    "procedures": "Procedures with code and shifted performed time.",
    "diagnostic_reports": "Diagnostic reports with code, shifted effective and issued times, result count.",
    "immunizations": "Immunizations with vaccine code and shifted occurrence.",
    "allergy_intolerances": "Allergies and intolerances with code, status, criticality and shifted dates.",
    "codings": "Every Coding of every resource, exploded: resource, path of the CodeableConcept, system, code.",
    "other_resources": "Every other resource type, with its subject, first date and pseudonymised JSON, so nothing is lost.",
    "declared_records": "Non-FHIR JSON records a provider declared with a JSON Schema or a pandera schema: record type, subject pseudonym, pseudonymised JSON (dates shifted, declared fields removed).",
}
COLUMN_TEXT = {
    "id": "resource id, remapped with the key",
    "subject_pseudonym": "keyed pseudonym of the patient",
    "encounter_id": "remapped id of the Encounter",
    "code_system": "code system of the first coding",
    "code": "code of the first coding",
    "code_display": "display of the first coding",
}
REFERENCE_CHECK = "subjects_resolve_to_patients"
LINKED_CHECK = "rows_about_a_person_have_a_subject"
LINKED_TABLES = [t for t, schema in ALL_TABLES.items() if "subject_pseudonym" in schema]
RECONCILE_CHECK = "records_in_equal_ingested_duplicates_quarantined"

landed_json_files = landing_inventory_asset(
    source="json",
    group="clinical",
    owners=[owners.CLINICAL, owners.PLATFORM],
    kinds={"fhir", "json"},
    expected_formats={"ndjson", "json", "gzip"},
    description=(
        "Inventory of one landed JSON batch (landing/json/<batch>/): FHIR Bulk Data NDJSON, FHIR "
        "Bundles and declared-schema JSON, one row per file with content hash, format and size. "
        "The 'landed' side of clinical reconciliation."
    ),
)


def clinical_key(table: str) -> dg.AssetKey:
    return dg.AssetKey(["clinical", table])


def _schema(table: str) -> pa.DataFrameSchema:
    columns = {}
    for name, dtype in ALL_TABLES[table].items():
        checks = [pa.Check.str_matches(PSEUDONYM)] if name == "subject_pseudonym" else None
        columns[name] = pa.Column(
            dtype,
            nullable=True,
            checks=checks,
            description=COLUMN_TEXT.get(name, name.replace("_", " ")),
        )
    return pa.DataFrameSchema(columns, strict=True, name=f"clinical_{table}")


SCHEMAS = {table: _schema(table) for table in ALL_TABLES}
JSON_INGESTION_POOL = "json_ingestion"
QUARANTINE_KEY = clinical_key("json_quarantine")


def _out(table: str) -> dg.AssetOut:
    metadata = {
        "partition_column": "batch",
        "dagster/column_schema": documented_columns(
            {n: (str(c.dtype), c.description) for n, c in SCHEMAS[table].columns.items()}
        ),
    }
    if "subject_pseudonym" in ALL_TABLES[table] and table != "codings":
        metadata["subject_column"] = "subject_pseudonym"
    return dg.AssetOut(
        key=clinical_key(table),
        group_name="clinical",
        owners=[owners.CLINICAL, owners.DATA_REFERENTS],
        kinds={"fhir", "polars", "parquet"},
        metadata=metadata,
        description=DESCRIPTIONS[table]
        + " Per landed batch; identifiers, names, addresses, telecom "
        "and free text removed; dates shifted by the subject's offset (as in imaging).",
    )


def known_patients(lake_root: Path, batch: str) -> dict[str, Subject]:
    """Patients of other batches, so that their resources delivered later still resolve."""
    files = [
        str(f)
        for f in Lake(lake_root).table(clinical_key("patients").path).files_outside("batch", batch)
    ]
    if not files:
        return {}
    frame = pl.scan_parquet(files).select("id", "subject_pseudonym", "subject_kind").collect()
    return {row[0]: Subject(row[1], row[2]) for row in frame.iter_rows()}


def earlier_batches(lake_root: Path, before: list[str]) -> EarlierBatches:
    """What the batches delivered before this one (in arrival order) hold: a resource sent
    again is a duplicate of the latest of them holding it."""
    lake = Lake(lake_root)
    rank = {batch: at for at, batch in enumerate(before)}
    tables = {}
    for table, schema in ALL_TABLES.items():
        held = lake.table(clinical_key(table).path).files_by_partition("batch")
        parts = [
            pl.scan_parquet([str(f) for f in files])
            .select(list(schema))
            .with_columns(pl.lit(rank[batch], pl.Int32).alias(RANK))
            for batch, files in held.items()
            if batch in rank and files
        ]
        if parts:
            tables[table] = pl.concat(parts, how="vertical")
    return EarlierBatches(tables)


def batches_before(context: dg.AssetExecutionContext, batch: str) -> list[str]:
    """Batches registered (by the landing sensor, in arrival order) before this one."""
    registered = context.instance.get_dynamic_partitions(BATCHES.name)
    return registered[: registered.index(batch)] if batch in registered else []


def without_excluded_people(
    tables: dict[str, pl.LazyFrame], excluded: frozenset[str]
) -> dict[str, pl.LazyFrame]:
    """Drop the rows of people who objected or asked for erasure, and the rows that hang off
    their resources without naming them (codings, observation components)."""
    if not excluded:
        return tables
    listed = sorted(excluded)
    ids = (
        pl.concat(
            [
                frame.filter(pl.col("subject_pseudonym").is_in(listed)).select(
                    pl.col("id").cast(pl.String)
                )
                for frame in tables.values()
                if {"subject_pseudonym", "id"} <= set(frame.collect_schema().names())
            ]
        )
        .collect()["id"]
        .to_list()
    )
    kept = {}
    for name, frame in tables.items():
        columns = set(frame.collect_schema().names())
        if "subject_pseudonym" in columns:
            frame = frame.filter(~pl.col("subject_pseudonym").is_in(listed).fill_null(False))
        for link in ("resource_id", "observation_id"):
            if link in columns and "subject_pseudonym" not in columns:
                frame = frame.filter(~pl.col(link).is_in(ids).fill_null(False))
        kept[name] = frame
    return kept


@dg.multi_asset(
    outs={
        **{clinical_key(t).to_python_identifier(): _out(t) for t in ALL_TABLES},
        QUARANTINE_KEY.to_python_identifier(): dg.AssetOut(
            key=QUARANTINE_KEY,
            group_name="clinical",
            owners=[owners.CLINICAL, owners.PLATFORM],
            kinds={"json", "polars", "parquet"},
            metadata={
                "partition_column": "batch",
                "dagster/column_schema": documented_columns(
                    {
                        "file_key": (
                            "string",
                            "opaque name of the landed file (its real name is in the operators' note)",
                        ),
                        "line": ("int", "line of the NDJSON file, or entry number of the Bundle"),
                        "reason": (
                            "string",
                            "invalid_json, missing_resource_type, not_a_resource, wrong_type, unknown_reference, unresolved_subject, invalid_date, conflicting_version, unreadable, not_json, missing_id",
                        ),
                        "message": ("string", "what was wrong, never a value of the record"),
                    }
                ),
            },
            description="Records of one JSON batch that were not ingested, with file, line and reason. "
            "The records themselves are in HDH_HOME/quarantine/json/<batch>/rejected_records.ndjson, for operators.",
        ),
    },
    deps=[landed_json_files.key],
    partitions_def=BATCHES,
    pool=JSON_INGESTION_POOL,
    check_specs=[
        *[
            dg.AssetCheckSpec(
                "matches_published_schema",
                asset=clinical_key(t),
                blocking=True,
                description="strict pandera schema; subject pseudonyms well formed",
            )
            for t in ALL_TABLES
        ],
        *[
            dg.AssetCheckSpec(
                LINKED_CHECK,
                asset=clinical_key(t),
                blocking=True,
                description="no row about a person lacks a subject pseudonym (an erasure could "
                "not find it): see hdh_assets/clinical/linkage.py for which rows are about a person",
            )
            for t in LINKED_TABLES
        ],
        dg.AssetCheckSpec(
            REFERENCE_CHECK,
            asset=clinical_key("patients"),
            description="every subject of every table is a Patient of this or an earlier batch",
        ),
        dg.AssetCheckSpec(
            RECONCILE_CHECK,
            asset=QUARANTINE_KEY,
            description="per file: records read = ingested + duplicates + quarantined",
        ),
    ],
)
def json_ingestion(
    context: dg.AssetExecutionContext,
    hdh_home: HomeResource,
    pseudonymisation: PseudonymisationKeyResource,
):
    # one batch at a time (the json_ingestion pool), outputs written included: a batch compares
    # its resources with what earlier batches hold, so it must not read one half written
    yield from _ingest_json(context, hdh_home, pseudonymisation)


def _ingest_json(
    context: dg.AssetExecutionContext,
    hdh_home: HomeResource,
    pseudonymisation: PseudonymisationKeyResource,
):
    home = hdh_home.home
    batch, folder = landed_batch(context, hdh_home, "json", pseudonymisation)
    # the run's tag (hdh ingest json --provider), else the batch's _PROVIDER marker, else default
    provider = provider_named(context.run.tags.get("hdh/provider") or provider_of(folder))
    settings = JsonIngestSettings(
        pseudonymisation.key_bytes(),
        home.quarantine / "json",
        provider,
        pseudonymisation.max_date_shift_days,
    )
    earlier = known_patients(home.lake, batch)
    spill = home.store / ".staging" / "json" / batch
    shutil.rmtree(spill, ignore_errors=True)  # what a crashed run left
    result = ingest_json_batch(
        batch,
        folder,
        settings,
        known_subjects=earlier,
        earlier=earlier_batches(home.lake, batches_before(context, batch)),
        spill=spill,
    )
    summary = result.summary()
    context.log.info(
        f"batch {batch}: {summary['records_in']} records in {summary['files']} files, "
        f"{summary['ingested']} ingested ({summary['newer_versions']} newer versions of "
        f"earlier batches' resources), {summary['duplicates']} duplicates, "
        f"{summary['quarantined']} quarantined"
    )
    tables = without_excluded_people(
        {name: frame.lazy() for name, frame in result.tables.items()},
        excluded_pseudonyms(hdh_home.home.lake),
    )
    unlinked = unlinked_person_rows(tables)
    systems = dict(
        tables["codings"]
        .group_by("system")
        .len()
        .sort("len", descending=True)
        .head(15)
        .collect()
        .iter_rows()
    )
    for table, frame in tables.items():
        metadata = {"resource_type": RESOURCE_TYPE_OF.get(table, table)}
        if table == "patients":
            metadata.update(
                {
                    k: summary[k]
                    for k in (
                        "records_in",
                        "ingested",
                        "newer_versions",
                        "duplicates",
                        "quarantined",
                    )
                }
            )
            metadata["rows_by_table"] = dg.MetadataValue.json(summary["rows_by_table"])
            metadata["code_systems"] = dg.MetadataValue.json(systems)
            metadata["provider"] = provider.name
            # how much of the batch the column-wise reader did (the rows are the same either way)
            metadata["lines_read"] = dg.MetadataValue.json(result.path_totals())
            metadata["landed_files"] = summary[
                "files"
            ]  # "files" is the IO manager's (Parquet files)
        dates = [c for c, t in ALL_TABLES[table].items() if isinstance(t, pl.Datetime)]
        if dates and result.rows[table]:
            low, high = (
                frame.select(
                    pl.min_horizontal(pl.col(dates).min()).alias("low"),
                    pl.max_horizontal(pl.col(dates).max()).alias("high"),
                )
                .collect()
                .row(0)
            )
            metadata["date_range"] = f"{low} .. {high}"
        yield dg.Output(
            frame, output_name=clinical_key(table).to_python_identifier(), metadata=metadata
        )
        # data-level checks need the rows; a huge table is checked on its schema only
        checked = frame.collect() if result.rows[table] <= FULL_CHECK_ROWS else frame
        yield pandera_check(
            SCHEMAS[table], checked, "matches_published_schema", clinical_key(table)
        )
        if table in LINKED_TABLES:
            yield dg.AssetCheckResult(
                check_name=LINKED_CHECK,
                asset_key=clinical_key(table),
                passed=unlinked.get(table, 0) == 0,
                metadata={"rows_about_a_person_without_subject": unlinked.get(table, 0)},
            )
    yield dg.Output(
        result.quarantine.cast(QUARANTINE_SCHEMA),
        output_name=QUARANTINE_KEY.to_python_identifier(),
        metadata={"by_reason": dg.MetadataValue.json(summary["quarantined_by_reason"])},
    )
    patients = set(tables["patients"].select("subject_pseudonym").collect().to_series()) | {
        s.pseudonym for s in earlier.values()
    }
    known = pl.Series(sorted(patients), dtype=pl.String)
    orphans = sum(
        frame.filter(
            pl.col("subject_pseudonym").is_not_null() & ~pl.col("subject_pseudonym").is_in(known)
        )
        .select(pl.len())
        .collect()
        .item()
        for table, frame in tables.items()
        if "subject_pseudonym" in ALL_TABLES[table]
    )
    yield dg.AssetCheckResult(
        check_name=REFERENCE_CHECK,
        asset_key=clinical_key("patients"),
        passed=orphans == 0,
        metadata={"rows_without_patient": orphans},
    )
    shutil.rmtree(spill, ignore_errors=True)  # every output has been written to the lake
    files = result.per_file
    balanced = bool(
        (
            files["records_in"] == files["ingested"] + files["duplicates"] + files["quarantined"]
        ).all()
    )
    yield dg.AssetCheckResult(
        check_name=RECONCILE_CHECK,
        asset_key=QUARANTINE_KEY,
        passed=balanced,
        metadata={k: summary[k] for k in ("records_in", "ingested", "duplicates", "quarantined")},
    )


assets = [landed_json_files, json_ingestion]
