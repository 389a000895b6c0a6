"""The rows of a decoded piece, pseudonymised as the per-record path would make them.

Keyed hashes are computed once per distinct value (subjects, referenced ids, date offsets) and,
for resource ids, once per row with the key's pads hashed once
(:mod:`hdh_assets.pseudonymisation.bulk`); subjects and references are resolved as the per-record
path resolves them. Each line of a piece is marked ``fast`` only when every check passed: its rows
are then certainly the per-record path's, the other lines go back one by one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from hdh_assets.clinical.flatten import ALL_TABLES, TABLES
from hdh_assets.clinical.identity import identity_expr, type_salt
from hdh_assets.clinical.vectorised.decoding import DecodedPiece
from hdh_assets.clinical.vectorised.expressions import (
    PieceContext,
    any_of,
    coding_paths_of,
    date_checks,
    table_columns,
)
from hdh_assets.clinical.vectorised.interface import SeenIdentities
from hdh_assets.clinical.vectorised.shapes import CHOICES, REFERENCED, SUBJECT_FIELD, is_variant
from hdh_assets.pseudonymisation.bulk import remap_ids
from hdh_assets.pseudonymisation.fhir import (
    REMOVED_KEYS,
    FhirContext,
    InvalidRecord,
    parse_reference,
)

SUBJECT_ANSWERS = {  # what a reference tells of its subject, as columns
    "ref": pl.String,
    "_unknown": pl.Boolean,
    "_subject": pl.String,
    "_kind": pl.String,
    "_offset": pl.Int64,
}
MAX_SUBJECT_ANSWERS = 200_000  # references whose subject is kept, across chunks


@dataclass
class PieceRows:
    """The rows one decoded piece feeds, per line of the piece (``_row``), and which lines are
    certainly the per-record path's (``fast``: the others go back one by one)."""

    rtype: str
    fast: np.ndarray  # per line: every check passed (cleared by the driver for repeated ids)
    raw_ids: pl.Series  # the ids as delivered
    rids: pl.Series  # the remapped ids
    identities: np.ndarray  # keyed (type, remapped id), as integers
    earlier: np.ndarray  # per line: an earlier batch holds the resource
    rows: pl.DataFrame  # the resource type's table, with ``_row``
    codings: pl.DataFrame  # (``_row``, path, system, code, display) of every Coding
    components: pl.DataFrame | None  # Observation components, with ``_row``

    def frames(self, rows: np.ndarray) -> dict[str, pl.DataFrame]:
        """The rows these resources of a piece feed, per table (with their ``_row``)."""
        keep = pl.Series("_row", rows, pl.Int64)
        frames = {TABLES[self.rtype][0]: self.rows.filter(pl.col("_row").is_in(keep))}
        if self.components is not None:
            frames["observation_components"] = self.components.filter(pl.col("_row").is_in(keep))
        codings = self.codings.filter(pl.col("_row").is_in(keep))
        if codings.height:
            frames["codings"] = codings.with_columns(
                resource_type=pl.lit(self.rtype), resource_id=self.rids.gather(codings["_row"])
            )
        return frames


class RowMaker:
    """Makes the rows of decoded pieces for one batch run. Answers about subjects are kept
    across chunks (a frame of up to MAX_SUBJECT_ANSWERS references), but for unknown Patients."""

    def __init__(self, context: FhirContext, seen: SeenIdentities) -> None:
        self.context = context
        self.seen = seen
        self._subject_frame = pl.DataFrame(schema=SUBJECT_ANSWERS)

    def rows_of(self, rtype: str, piece: DecodedPiece) -> PieceRows:
        """Rows of one decoded piece, and which of them are certainly the per-record path's."""
        context, frame, observed, extra = self.context, piece.frame, piece.observed, piece.extra
        height = frame.height
        frame = frame.with_columns(_row=pl.int_range(height, dtype=pl.Int64))
        known = observed
        bad: list[pl.Expr] = [
            (pl.col("resourceType") != rtype).fill_null(True),
            pl.col("id").is_null() | (pl.col("id") == ""),
        ]
        for prefix in CHOICES.get(rtype, ()):
            variants = [c for c in known if is_variant(c, prefix)]
            if len(variants) > 1:
                bad.append(pl.sum_horizontal([pl.col(c).is_not_null() for c in variants]) > 1)
        if rtype == "Observation" and "component" in known:
            variants = [
                f.name for f in known["component"].inner.fields if is_variant(f.name, "value")
            ]
            if len(variants) > 1:
                bad.append(
                    pl.col("component")
                    .list.eval(
                        pl.sum_horizontal(
                            [pl.element().struct.field(v).is_not_null() for v in variants]
                        )
                        > 1
                    )
                    .list.any()
                    .fill_null(False)
                )
        ctx = PieceContext(frame.schema, known)
        for column, dtype in known.items():
            if column in ("resourceType", "id", "birthDate") or column in REMOVED_KEYS:
                continue
            bad += date_checks(pl.col(column), dtype, column, ctx)
        if rtype == "Patient":
            birth = pl.col("birthDate")
            bad.append(
                birth.is_not_null()
                & ~birth.str.contains(r"^[0-9]{4}(-[0-9]{2}(-[0-9]{2})?)?$").fill_null(False)
            )

        # keyed hashes, once per distinct value
        raw_ids = frame["id"].fill_null("")
        if rtype in REFERENCED:  # remembered: other resources refer to them
            rids = pl.Series("_rid", context.remap_many(raw_ids.to_list()), pl.String)
        else:
            key = context.pseudonymiser.key
            rids = pl.Series("_rid", remap_ids(key, context.provider, raw_ids.to_list()))
        columns = {"_rid": rids}
        if rtype == "Patient":
            subjects = [context.subjects.get(r) for r in rids.to_list()]
            offsets = context.offsets_many(subjects)
            columns["_subject"] = pl.Series(
                [s.pseudonym if s else None for s in subjects], dtype=pl.String
            )
            columns["_kind"] = pl.Series([s.kind if s else None for s in subjects], dtype=pl.String)
            columns["_offset"] = pl.Series(offsets, dtype=pl.Int64)
            columns["_unknown"] = pl.Series([s is None for s in subjects], dtype=pl.Boolean)
        else:
            named = frame[SUBJECT_FIELD.get(rtype, "subject")]
            columns.update(self._subjects_of(named.struct.field("reference")).to_dict())
            columns.update(self._identified(named, columns))
        for name, path in (
            ("_encounter_id", "encounter"),
            ("_service_provider_id", "serviceProvider"),
        ):
            if path in known:
                columns[name] = self._ref_ids_of(frame[path].struct.field("reference"))
            else:
                columns[name] = pl.Series(name, [None] * height, pl.String)
        frame = frame.with_columns(**{k: v.alias(k) for k, v in columns.items()})
        keyed = frame.select(
            identity_expr(pl.lit(rtype), pl.col("_rid"), {rtype: type_salt(rtype)})
        )
        if keyed.to_series().null_count():  # remapped ids are keyed hashes: never happens
            raise ValueError("a remapped id is not 32 hex digits")
        identities = keyed.to_series().to_numpy().astype(np.int64)
        bad.append(pl.col("_unknown"))
        row_columns = table_columns(rtype, ctx, context.birth_date)
        first_stage, second_stage = ctx.date_stages()
        if first_stage:
            frame = frame.with_columns(first_stage).with_columns(second_stage)
        bad += ctx.bad
        schema = ALL_TABLES[TABLES[rtype][0]]
        rows = frame.select(
            pl.col("_row"),
            any_of(bad).alias("_bad"),
            *[row_columns[c].cast(t).alias(c) for c, t in schema.items()],
        )
        fast = ~rows["_bad"].to_numpy() & ~extra & ~self.seen.contains(identities)
        components = None
        if rtype == "Observation" and "component" in known:
            components = self._components(frame, known["component"])
            if components is not None:
                fast[components.filter(pl.col("_bad"))["_row"].unique().to_numpy()] = False
                components = components.drop("_bad")
        return PieceRows(
            rtype=rtype,
            fast=fast,
            raw_ids=raw_ids,
            rids=rids,
            identities=identities,
            earlier=self.seen.earlier(identities),
            rows=rows.drop("_bad"),
            codings=codings_of(frame, coding_paths_of(known)),
            components=components,
        )

    def _components(self, frame: pl.DataFrame, dtype: pl.DataType) -> pl.DataFrame | None:
        parts = (
            frame.select(
                "_row",
                "_rid",
                "_offset",
                "component",
                _index=pl.int_ranges(0, pl.col("component").list.len(), dtype=pl.Int32),
            )
            .explode("component", "_index")
            .drop_nulls("component")
        )
        if not parts.height:
            return None
        fields = {f.name: f.dtype for f in dtype.inner.fields}
        ctx = PieceContext(parts.schema, fields)
        node = pl.col("component")
        if "code" in fields:
            system, code, display = ctx.first_coding(node.struct.field("code"))
        else:
            system = code = display = pl.lit(None, pl.String)
        columns = {
            "observation_id": pl.col("_rid"),
            "index": pl.col("_index"),
            "code_system": system,
            "code": code,
            "code_display": display,
            **ctx.value(node, fields),
        }
        first_stage, second_stage = ctx.date_stages()
        if first_stage:
            parts = parts.with_columns(first_stage).with_columns(second_stage)
        schema = ALL_TABLES["observation_components"]
        return parts.select(
            pl.col("_row"),
            any_of(ctx.bad).alias("_bad"),
            *[columns[c].cast(t).alias(c) for c, t in schema.items()],
        )

    def _subjects_of(self, refs: pl.Series) -> pl.DataFrame:
        """The per-record path's subject_of for each reference of ``refs``, in its order:
        columns _unknown, _subject, _kind, _offset. A reference to no Patient gives no subject;
        a Patient not known (learnt later in the file, if ever) sends the row back."""
        context, known = self.context, self._subject_frame
        distinct = refs.drop_nulls().unique()
        if known.height:
            distinct = distinct.filter(~distinct.is_in(known["ref"]))
        answers, targets, unknown = [], {}, []
        for reference in distinct.to_list():
            target = parse_reference(reference, context.full_urls)
            if target is None and reference.startswith("Patient?"):
                unknown.append(reference)  # by identifier, conditionally: one by one
            elif target is None or target[0] not in ("Patient", None):
                answers.append((reference, False, None, None, 0))
            else:
                targets[reference] = target[1]
        if targets:
            subjects = [context.subjects.get(r) for r in context.remap_many(list(targets.values()))]
            offsets = context.offsets_many(subjects)
            for reference, subject, offset in zip(targets, subjects, offsets, strict=True):
                if subject is None:
                    unknown.append(reference)
                else:
                    answers.append((reference, False, subject.pseudonym, subject.kind, offset))
        schema = SUBJECT_ANSWERS
        new = pl.DataFrame(answers, schema=schema, orient="row")
        if known.height + new.height > MAX_SUBJECT_ANSWERS:
            known = known.clear()
        known = self._subject_frame = pl.concat([known, new], how="vertical")
        table = pl.concat(
            [
                known,
                pl.DataFrame(
                    [(r, True, None, None, 0) for r in unknown], schema=schema, orient="row"
                ),
            ],
            how="vertical",
        )
        at = refs.replace_strict(table["ref"], pl.Series(np.arange(table.height)), default=None)
        # gather, not indexing: a piece naming no subject at all gives only null positions
        return (
            table.drop("ref")
            .select(pl.all().gather(at))
            .with_columns(pl.col("_unknown").fill_null(False), pl.col("_offset").fill_null(0))
        )

    def _identified(self, named: pl.Series, answers: dict[str, pl.Series]) -> dict:
        """``answers`` (the references' subjects) completed with those named by identifier, as
        the per-record path's subject_of resolves them: once per distinct identifier. One that
        resolves to nobody, or beside a reference, sends the row back (the per-record path
        quarantines it with its reason)."""
        identifier = named.struct.field("identifier")
        if not identifier.is_not_null().any():
            return {}
        context = self.context
        alone = identifier.is_not_null() & named.struct.field("reference").is_null()
        rows = pl.DataFrame(
            {
                "s": identifier.struct.field("system"),
                "v": identifier.struct.field("value"),
                "alone": alone,
            }
        )
        found = []
        for system, value in rows.filter("alone").select("s", "v").unique().drop_nulls().rows():
            try:
                found.append((system, value, context.subject_by_identifier(system, value)))
            except InvalidRecord:
                continue
        subjects = [subject for _, _, subject in found]
        table = pl.DataFrame(
            {
                "s": [f[0] for f in found],
                "v": [f[1] for f in found],
                "_subject": [s.pseudonym for s in subjects],
                "_kind": [s.kind for s in subjects],
                "_offset": context.offsets_many(subjects),
            },
            schema={
                "s": pl.String,
                "v": pl.String,
                "_subject": pl.String,
                "_kind": pl.String,
                "_offset": pl.Int64,
            },
        )
        joined = rows.join(table, on=["s", "v"], how="left", maintain_order="left")
        unresolved = alone & joined["_subject"].is_null()
        out = {"_unknown": answers["_unknown"] | (identifier.is_not_null() & ~alone) | unresolved}
        for name in ("_subject", "_kind", "_offset"):
            out[name] = joined[name].zip_with(alone, answers[name]).alias(name)
        out["_offset"] = out["_offset"].fill_null(0)
        return out

    def _ref_ids_of(self, refs: pl.Series) -> pl.Series:
        """flatten._ref_id of each rewritten reference: the remapped id of the reference's
        target, None for a reference the per-record path rewrites to ``unresolved``."""
        context = self.context
        plain = refs.str.extract(r"^[A-Za-z]+/([A-Za-z0-9\-.]{1,64})$", 1)
        others = refs.filter(plain.is_null() & refs.is_not_null()).unique().to_list()
        targets = {}
        for reference in others:
            if reference.startswith("#"):  # contained: a provider's local id, never output
                continue
            target = parse_reference(reference, context.full_urls)
            targets[reference] = target[1] if target is not None else None  # or "unresolved"
        ids = plain
        if targets:
            ids = plain.fill_null(
                refs.replace_strict(targets, default=None, return_dtype=pl.String)
            )
        distinct = ids.drop_nulls().unique()
        remapped = pl.Series(context.remap_many(distinct.to_list()), dtype=pl.String)
        return ids.replace_strict(distinct, remapped, default=None, return_dtype=pl.String)


def _explode_to(frame: pl.LazyFrame, schema: pl.Schema, steps: tuple[str, ...]) -> pl.LazyFrame:
    """Rows (``_row``, ``v``) of the values at ``steps``, lists exploded on the way."""
    out, dtype = frame.select(pl.col("_row"), pl.col(steps[0]).alias("v")), schema[steps[0]]
    for name in steps[1:]:
        while isinstance(dtype, pl.List):
            out, dtype = out.explode("v"), dtype.inner
        out = out.select(pl.col("_row"), pl.col("v").struct.field(name).alias("v"))
        dtype = {f.name: f.dtype for f in dtype.fields}[name]
    while isinstance(dtype, pl.List):
        out, dtype = out.explode("v"), dtype.inner
    return out


def codings_of(frame: pl.DataFrame, paths: list[tuple[str, ...]]) -> pl.DataFrame:
    """(``_row``, path, system, code, display) of every Coding with a code or a system."""
    lazy, parts = frame.lazy(), []
    for path in paths:
        if frame[path[0]].null_count() == frame.height:
            continue
        coding = pl.col("v")
        system, code = coding.struct.field("system"), coding.struct.field("code")
        parts.append(
            _explode_to(lazy, frame.schema, (*path, "coding"))
            .filter((system.is_not_null() & (system != "")) | (code.is_not_null() & (code != "")))
            .select(
                pl.col("_row"),
                pl.lit(".".join(path)).alias("path"),
                system.alias("system"),
                code.alias("code"),
                coding.struct.field("display").alias("display"),
            )
        )
    if not parts:
        return pl.DataFrame(
            schema={
                "_row": pl.Int64,
                "path": pl.String,
                "system": pl.String,
                "code": pl.String,
                "display": pl.String,
            }
        )
    return pl.concat(parts, how="vertical").collect()
