"""polars expressions that pseudonymise and flatten a decoded piece, row for row as the
per-record path does, and flag the rows it would read differently.

Two kinds, built over a piece's columns: checks (boolean expressions, true where a row must go
back one by one: a field outside the shape, a float that is not JSON, a text the per-record path
would shift as a date, a date it would refuse), and the typed tables' columns, as flatten.py's
row functions compute them (first codings, choice elements, ``value[x]``, shifted dates).
"""

from __future__ import annotations

import polars as pl

from hdh_assets.clinical.flatten import VALUE_COLUMNS
from hdh_assets.clinical.vectorised.shapes import DATE_KEYS, NOT_DATES, QUANTITY, is_variant
from hdh_assets.pseudonymisation.fhir import REMOVED_KEYS

_DATE_LIKE = r"^\d{4}-\d{2}-\d{2}"  # unicode digits, like the per-record path's regex
_STRICT = (
    r"^[1-8][0-9]{3}-[0-9]{2}-[0-9]{2}(T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?"
    r"(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])?)?$"
)
TIMESTAMP = pl.Datetime("us", "UTC")


def any_of(exprs: list[pl.Expr]) -> pl.Expr:
    return pl.any_horizontal(exprs).fill_null(False) if exprs else pl.lit(False)


def _in_lists(expr: pl.Expr, dtype: pl.DataType, build) -> tuple[list[pl.Expr], pl.DataType]:
    """Apply ``build(element_expr, element_dtype) -> [bool exprs]`` through list levels."""
    if isinstance(dtype, pl.List):
        inner = _in_lists(pl.element(), dtype.inner, build)[0]
        if not inner:
            return [], dtype
        return [expr.list.eval(any_of(inner)).list.any().fill_null(False)], dtype
    return build(expr, dtype), dtype


def fields_outside(
    expr: pl.Expr, actual: pl.DataType, expected: pl.DataType | None
) -> list[pl.Expr]:
    """True where a field outside the shape is present (removed elements excepted)."""
    if isinstance(actual, pl.List):
        if not isinstance(expected, pl.List):
            return [expr.is_not_null()]
        return _in_lists(expr, actual, lambda e, d: fields_outside(e, d, _innermost(expected)))[0]
    if isinstance(actual, pl.Struct):
        if not isinstance(expected, pl.Struct):
            return [expr.is_not_null()]
        known = {f.name: f.dtype for f in expected.fields}
        out = []
        for field in actual.fields:
            if field.name in REMOVED_KEYS:
                continue
            if field.name not in known:
                out.append(expr.struct.field(field.name).is_not_null())
            else:
                out += fields_outside(expr.struct.field(field.name), field.dtype, known[field.name])
        return out
    if expected is None or actual != expected:
        return [expr.is_not_null()]
    return []


def not_finite(expr: pl.Expr, dtype: pl.DataType) -> list[pl.Expr]:
    """True where a float is NaN or infinite: pyarrow reads ``NaN`` and ``Infinity``, which
    are not JSON (orjson refuses the line)."""
    if isinstance(dtype, pl.List):
        return _in_lists(expr, dtype, not_finite)[0]
    if isinstance(dtype, pl.Struct):
        return [e for f in dtype.fields for e in not_finite(expr.struct.field(f.name), f.dtype)]
    if dtype.is_float():
        return [(expr.is_nan() | expr.is_infinite()).fill_null(False)]
    return []


def _innermost(dtype: pl.DataType) -> pl.DataType:
    while isinstance(dtype, pl.List):
        dtype = dtype.inner
    return dtype


def _instant(value: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
    """(UTC instant before any date shift, well formed) of a FHIR date or date-time, as
    ``datetime.fromisoformat`` reads it in the per-record path: a date alone is midnight UTC, a
    date-time without offset is UTC. Only the plain forms are read (``_STRICT``); the instant is
    null for a date that does not exist."""
    text = value.str.replace("Z$", "+00:00")
    without_offset = ~text.str.slice(-6, 1).is_in(["+", "-"])
    stamped = pl.when(without_offset).then(text + "+00:00").otherwise(text)
    instant = (
        pl.when(value.str.len_chars() == 10)
        .then(
            value.str.to_date("%Y-%m-%d", strict=False)
            .cast(pl.Datetime("us"))
            .dt.replace_time_zone("UTC")
        )
        .otherwise(
            stamped.str.to_datetime(
                "%Y-%m-%dT%H:%M:%S%.f%:z", time_unit="us", time_zone="UTC", strict=False
            )
        )
    )
    return instant, value.str.contains(_STRICT).fill_null(False)


def date_checks(
    expr: pl.Expr, dtype: pl.DataType, key: str, ctx: PieceContext | None = None
) -> list[pl.Expr]:
    """True where a text the per-record path would shift (or refuse) as a date is met. ``ctx``
    outside lists: date fields are then read once, with the row's other dates."""
    if isinstance(dtype, pl.List):
        return _in_lists(expr, dtype, lambda e, d: date_checks(e, d, key))[0]
    if isinstance(dtype, pl.Struct):
        names = {f.name for f in dtype.fields}
        coding = "code" in names or "system" in names
        out = []
        for field in dtype.fields:
            name = field.name
            if name in REMOVED_KEYS or name == "data":
                continue  # removed, whatever it holds (data: from attachments)
            if name == "display" and not coding:
                continue  # removed from references
            out += date_checks(expr.struct.field(name), field.dtype, name, ctx)
        return out
    if dtype != pl.String or key in NOT_DATES:
        return []  # texts under these keys are never shifted
    like = expr.str.contains(_DATE_LIKE)
    if key not in DATE_KEYS:
        return [like]
    if ctx is not None:
        return [like & ~ctx.read(expr)]
    instant, formed = _instant(expr)
    return [like & ~(formed & instant.is_not_null())]


class PieceContext:
    """Expressions over one decoded piece (the subject's day offset in ``_offset``). Dates are
    read once each, into columns made by :meth:`date_stages` before the rows are selected."""

    def __init__(self, schema: pl.Schema, observed: dict[str, pl.DataType]):
        self.schema = schema
        self.observed = observed
        self.bad: list[pl.Expr] = []
        self._dates: dict[str, tuple[str, pl.Expr]] = {}

    def _date(self, value: pl.Expr) -> str:
        key = str(value)
        if key not in self._dates:
            self._dates[key] = (f"_d{len(self._dates)}", value)
        return self._dates[key][0]

    def read(self, value: pl.Expr) -> pl.Expr:
        """True where ``value`` is a date or date-time read here (a real day, a plain form)."""
        return pl.col(self._date(value) + "_ok")

    def date_stages(self) -> tuple[list[pl.Expr], list[pl.Expr]]:
        first, second = [], []
        for name, value in self._dates.values():
            instant, formed = _instant(value)
            first += [instant.alias(name + "_t"), formed.alias(name + "_f")]
            length = value.str.len_chars()
            ok = pl.col(name + "_f") & pl.col(name + "_t").is_not_null()
            second += [
                ok.alias(name + "_ok"),
                (value.is_not_null() & (value != "") & ~length.is_in([4, 7]) & ~ok)
                .fill_null(False)
                .alias(name + "_bad"),
            ]
        return first, second

    def field(self, path: str) -> pl.Expr:
        first, *rest = path.split(".")
        expr = pl.col(first)
        for name in rest:
            expr = expr.struct.field(name)
        return expr

    def when(self, value: pl.Expr) -> pl.Expr:
        """The per-record path's _when of the shifted text; a text it would refuse, or that is
        not read here, sends the row back."""
        name = self._date(value)
        self.bad.append(pl.col(name + "_bad"))
        return pl.when(pl.col(name + "_ok")).then(
            pl.col(name + "_t") + pl.duration(days=pl.col("_offset"))
        )

    def first_coding(self, concept: pl.Expr) -> tuple[pl.Expr, pl.Expr, pl.Expr]:
        coding = concept.struct.field("coding").list.first()
        system, code = coding.struct.field("system"), coding.struct.field("code")
        display = pl.when(system.is_not_null() | code.is_not_null()).then(
            coding.struct.field("display")
        )
        return system, code, display

    def coded(self, path: str = "code") -> dict[str, pl.Expr]:
        system, code, display = self.first_coding(self.field(path))
        return {"code_system": system, "code": code, "code_display": display}

    def choice_instant(self, prefix: str) -> pl.Expr:
        parts = []
        for name, dtype in self.observed.items():
            if not is_variant(name, prefix):
                continue
            kind = name[len(prefix) :]
            if kind in ("DateTime", "Instant") and dtype == pl.String:
                parts.append(self.when(pl.col(name)))
            elif kind == "Period":
                parts.append(self.when(pl.col(name).struct.field("start")))
        return pl.coalesce(parts) if parts else pl.lit(None, TIMESTAMP)

    def value(self, node: pl.Expr | None, fields: dict[str, pl.DataType]) -> dict[str, pl.Expr]:
        """The per-record path's _value: the value[x] variant present (of those in ``fields``,
        the observed ones), in typed columns."""

        def get(name: str) -> pl.Expr | None:
            if name not in fields:
                return None
            return node.struct.field(name) if node is not None else pl.col(name)

        def coalesce(parts: list[pl.Expr | None], dtype: pl.DataType) -> pl.Expr:
            parts = [p for p in parts if p is not None]
            return pl.coalesce(parts) if parts else pl.lit(None, dtype)

        kinds = [n[len("value") :] for n in fields if is_variant(n, "value")]
        out = {
            "value_type": coalesce(
                [pl.when(get("value" + k).is_not_null()).then(pl.lit(k)) for k in kinds],
                pl.String,
            )
        }
        quantity, concept = get("valueQuantity"), get("valueCodeableConcept")
        ranged, ratio, period = get("valueRange"), get("valueRatio"), get("valuePeriod")
        unit = []
        if quantity is not None:
            code = quantity.struct.field("code")
            out["value_quantity"] = quantity.struct.field("value")
            unit.append(
                pl.when(quantity.is_not_null()).then(
                    pl.when(code.is_not_null() & (code != ""))
                    .then(code)
                    .otherwise(quantity.struct.field("unit"))
                )
            )
        low = high = None
        if ranged is not None:
            low, high = ranged.struct.field("low"), ranged.struct.field("high")

            def filled(part: pl.Expr) -> pl.Expr:  # a non-empty object: truthy in Python
                return pl.any_horizontal(
                    [part.struct.field(f).is_not_null() for f in QUANTITY.names]
                )

            unit.append(
                pl.when(ranged.is_not_null()).then(
                    pl.when(filled(low))
                    .then(low.struct.field("code"))
                    .when(filled(high))
                    .then(high.struct.field("code"))
                )
            )
        out["value_unit"] = coalesce(unit, pl.String)
        if concept is not None:
            system, code, display = self.first_coding(concept)
            out.update(value_code_system=system, value_code=code, value_display=display)
        out["value_string"] = coalesce([get("valueString"), get("valueTime")], pl.String)
        out["value_boolean"] = coalesce([get("valueBoolean")], pl.Boolean)
        out["value_integer"] = coalesce([get("valueInteger")], pl.Int64)
        dated = get("valueDateTime")
        out["value_datetime"] = coalesce(
            [
                self.when(dated) if dated is not None else None,
                self.when(period.struct.field("start")) if period is not None else None,
            ],
            TIMESTAMP,
        )
        out["value_low"] = coalesce(
            [
                low.struct.field("value") if low is not None else None,
                ratio.struct.field("numerator").struct.field("value")
                if ratio is not None
                else None,
            ],
            pl.Float64,
        )
        out["value_high"] = coalesce(
            [
                high.struct.field("value") if high is not None else None,
                ratio.struct.field("denominator").struct.field("value")
                if ratio is not None
                else None,
            ],
            pl.Float64,
        )
        for column, dtype in VALUE_COLUMNS.items():
            out.setdefault(column, pl.lit(None, dtype))
        return out


def table_columns(rtype: str, ctx: PieceContext, birth_rule: str) -> dict[str, pl.Expr]:
    """The typed table's columns, as flatten.py's row functions compute them."""
    base = {"id": pl.col("_rid"), "subject_pseudonym": pl.col("_subject")}
    encounter = {"encounter_id": pl.col("_encounter_id")}
    if rtype == "Patient":
        birth = pl.col("birthDate")
        if birth_rule == "none":
            general = pl.lit(None, pl.String)
        else:
            general = pl.when(birth.str.len_chars() >= 4).then(
                birth.str.slice(0, 4 if birth_rule == "year" else 7)
            )
        deceased_text = pl.col("deceasedDateTime")
        return {
            **base,
            "subject_kind": pl.col("_kind"),
            "gender": pl.col("gender"),
            "birth_date": general,
            "birth_year": general.str.slice(0, 4).str.to_integer(strict=False).cast(pl.Int32),
            "deceased": pl.col("deceasedBoolean").fill_null(False)
            | (deceased_text.is_not_null() & (deceased_text != "")),
            "deceased_at": ctx.when(deceased_text),
        }
    if rtype == "Encounter":
        system, code, _ = ctx.first_coding(pl.col("type").list.first())
        return {
            **base,
            "status": pl.col("status"),
            "class_code": pl.col("class").struct.field("code"),
            "type_system": system,
            "type_code": code,
            "period_start": ctx.when(ctx.field("period.start")),
            "period_end": ctx.when(ctx.field("period.end")),
            "service_provider_id": pl.col("_service_provider_id"),
        }
    if rtype == "Condition":
        return {
            **base,
            **ctx.coded(),
            **encounter,
            "clinical_status": ctx.first_coding(pl.col("clinicalStatus"))[1],
            "verification_status": ctx.first_coding(pl.col("verificationStatus"))[1],
            "onset_at": ctx.choice_instant("onset"),
            "recorded_at": ctx.when(pl.col("recordedDate")),
        }
    if rtype == "Observation":
        return {
            **base,
            **ctx.coded(),
            **encounter,
            "status": pl.col("status"),
            "effective_at": ctx.choice_instant("effective"),
            "issued_at": ctx.when(pl.col("issued")),
            **ctx.value(None, ctx.observed),
            "components": pl.col("component").list.len().fill_null(0).cast(pl.Int32),
        }
    if rtype == "MedicationRequest":
        return {
            **base,
            **ctx.coded("medicationCodeableConcept"),
            **encounter,
            "status": pl.col("status"),
            "intent": pl.col("intent"),
            "authored_at": ctx.when(pl.col("authoredOn")),
        }
    if rtype == "Procedure":
        return {
            **base,
            **ctx.coded(),
            **encounter,
            "status": pl.col("status"),
            "performed_at": ctx.choice_instant("performed"),
        }
    if rtype == "DiagnosticReport":
        return {
            **base,
            **ctx.coded(),
            **encounter,
            "status": pl.col("status"),
            "effective_at": ctx.choice_instant("effective"),
            "issued_at": ctx.when(pl.col("issued")),
            "results": pl.col("result").list.len().fill_null(0).cast(pl.Int32),
        }
    if rtype == "Immunization":
        return {
            **base,
            **ctx.coded("vaccineCode"),
            **encounter,
            "status": pl.col("status"),
            "occurred_at": ctx.choice_instant("occurrence"),
        }
    if rtype == "AllergyIntolerance":
        return {
            **base,
            **ctx.coded(),
            "clinical_status": ctx.first_coding(pl.col("clinicalStatus"))[1],
            "criticality": pl.col("criticality"),
            "onset_at": ctx.choice_instant("onset"),
            "recorded_at": ctx.when(pl.col("recordedDate")),
        }
    raise KeyError(rtype)


def _coding_paths(dtype: pl.DataType, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Paths of every CodeableConcept (an object with a ``coding`` list) the walk would reach."""
    dtype = _innermost(dtype)
    if not isinstance(dtype, pl.Struct):
        return []
    out = []
    for field in dtype.fields:
        if field.name in REMOVED_KEYS:
            continue
        if field.name == "coding":
            out.append(path)
            continue
        out += _coding_paths(field.dtype, (*path, field.name))
    return out


def coding_paths_of(columns: dict[str, pl.DataType]) -> list[tuple[str, ...]]:
    return [
        path
        for name, dtype in columns.items()
        if name not in REMOVED_KEYS
        for path in _coding_paths(dtype, (name,))
    ]
