"""The FHIR shapes read column-wise: per resource type, the allowlisted fields and their types.

A line is decoded against its type's shape, so that no field outside it is ever passed through:
pyarrow is given an explicit schema (never an inferred one), and the polars expressions know the
type of every column they read. The FHIR knowledge the other modules need lives here too: which
keys hold dates, which choice elements (``value[x]``) exist, where a resource names its subject.
"""

from __future__ import annotations

import polars as pl
import pyarrow as pa

# pyarrow types of JSON leaves
S, F, B, I64 = pa.string(), pa.float64(), pa.bool_(), pa.int64()


def _struct(**fields: pa.DataType) -> pa.DataType:
    return pa.struct(list(fields.items()))


def _list(item: pa.DataType) -> pa.DataType:
    return pa.list_(item)


CODING = _struct(system=S, version=S, code=S, display=S, userSelected=B)
CC = _struct(coding=_list(CODING), text=S)
REF = _struct(reference=S, display=S)
# where a resource names its subject: by reference, or by identifier (resolved to a Patient's)
SUBJECT_REF = _struct(reference=S, display=S, identifier=_struct(system=S, value=S))
PERIOD = _struct(start=S, end=S)
QUANTITY = _struct(value=F, comparator=S, unit=S, system=S, code=S)
RANGE = _struct(low=QUANTITY, high=QUANTITY)
RATIO = _struct(numerator=QUANTITY, denominator=QUANTITY)
ATTACHMENT = _struct(contentType=S, language=S, data=S, url=S, size=F, hash=S, title=S, creation=S)
VALUES = {
    "valueQuantity": QUANTITY,
    "valueCodeableConcept": CC,
    "valueString": S,
    "valueBoolean": B,
    "valueInteger": I64,
    "valueDateTime": S,
    "valuePeriod": PERIOD,
    "valueRange": RANGE,
    "valueRatio": RATIO,
    "valueTime": S,
}
TIMING = _struct(
    event=_list(S),
    repeat=_struct(
        boundsPeriod=PERIOD,
        count=F,
        duration=F,
        durationUnit=S,
        frequency=F,
        period=F,
        periodUnit=S,
        dayOfWeek=_list(S),
        timeOfDay=_list(S),
        when=_list(S),
    ),
    code=CC,
)
DOSAGE = _struct(
    sequence=F,
    text=S,
    additionalInstruction=_list(CC),
    timing=TIMING,
    asNeededBoolean=B,
    asNeededCodeableConcept=CC,
    site=CC,
    route=CC,
    method=CC,
    doseAndRate=_list(
        _struct(type=CC, doseQuantity=QUANTITY, doseRange=RANGE, rateQuantity=QUANTITY)
    ),
)
_COMMON = {"resourceType": S, "id": S, "language": S, "implicitRules": S}

SHAPES: dict[str, dict[str, pa.DataType]] = {
    "Patient": {
        **_COMMON,
        "active": B,
        "gender": S,
        "birthDate": S,
        "deceasedBoolean": B,
        "deceasedDateTime": S,
        "maritalStatus": CC,
        "multipleBirthBoolean": B,
        "multipleBirthInteger": I64,
        "generalPractitioner": _list(REF),
        "managingOrganization": REF,
    },
    "Encounter": {
        **_COMMON,
        "status": S,
        "class": CODING,
        "type": _list(CC),
        "serviceType": CC,
        "priority": CC,
        "subject": SUBJECT_REF,
        "episodeOfCare": _list(REF),
        "basedOn": _list(REF),
        "participant": _list(_struct(type=_list(CC), period=PERIOD, individual=REF)),
        "appointment": _list(REF),
        "period": PERIOD,
        "reasonCode": _list(CC),
        "reasonReference": _list(REF),
        "diagnosis": _list(_struct(condition=REF, use=CC, rank=F)),
        "hospitalization": _struct(
            admitSource=CC, reAdmission=CC, dischargeDisposition=CC, destination=REF, origin=REF
        ),
        "location": _list(_struct(location=REF, status=S, physicalType=CC, period=PERIOD)),
        "serviceProvider": REF,
        "partOf": REF,
    },
    "Condition": {
        **_COMMON,
        "clinicalStatus": CC,
        "verificationStatus": CC,
        "category": _list(CC),
        "severity": CC,
        "code": CC,
        "bodySite": _list(CC),
        "subject": SUBJECT_REF,
        "encounter": REF,
        "onsetDateTime": S,
        "onsetPeriod": PERIOD,
        "onsetString": S,
        "onsetAge": QUANTITY,
        "onsetRange": RANGE,
        "abatementDateTime": S,
        "abatementPeriod": PERIOD,
        "abatementString": S,
        "recordedDate": S,
        "recorder": REF,
        "asserter": REF,
        "evidence": _list(_struct(code=_list(CC), detail=_list(REF))),
    },
    "Observation": {
        **_COMMON,
        "status": S,
        "basedOn": _list(REF),
        "partOf": _list(REF),
        "category": _list(CC),
        "code": CC,
        "subject": SUBJECT_REF,
        "focus": _list(REF),
        "encounter": REF,
        "effectiveDateTime": S,
        "effectivePeriod": PERIOD,
        "effectiveInstant": S,
        "issued": S,
        "performer": _list(REF),
        **VALUES,
        "dataAbsentReason": CC,
        "interpretation": _list(CC),
        "bodySite": CC,
        "method": CC,
        "specimen": REF,
        "device": REF,
        "referenceRange": _list(
            _struct(low=QUANTITY, high=QUANTITY, type=CC, appliesTo=_list(CC), text=S)
        ),
        "hasMember": _list(REF),
        "derivedFrom": _list(REF),
        "component": _list(
            _struct(
                code=CC,
                **VALUES,
                dataAbsentReason=CC,
                interpretation=_list(CC),
            )
        ),
    },
    "MedicationRequest": {
        **_COMMON,
        "status": S,
        "statusReason": CC,
        "intent": S,
        "category": _list(CC),
        "priority": S,
        "reportedBoolean": B,
        "medicationCodeableConcept": CC,
        "medicationReference": REF,
        "subject": SUBJECT_REF,
        "encounter": REF,
        "authoredOn": S,
        "requester": REF,
        "performer": REF,
        "recorder": REF,
        "reasonCode": _list(CC),
        "reasonReference": _list(REF),
        "basedOn": _list(REF),
        "courseOfTherapyType": CC,
        "insurance": _list(REF),
        "dosageInstruction": _list(DOSAGE),
        "priorPrescription": REF,
    },
    "Procedure": {
        **_COMMON,
        "basedOn": _list(REF),
        "partOf": _list(REF),
        "status": S,
        "statusReason": CC,
        "category": CC,
        "code": CC,
        "subject": SUBJECT_REF,
        "encounter": REF,
        "performedDateTime": S,
        "performedPeriod": PERIOD,
        "performedString": S,
        "recorder": REF,
        "asserter": REF,
        "performer": _list(_struct(function=CC, actor=REF, onBehalfOf=REF)),
        "location": REF,
        "reasonCode": _list(CC),
        "reasonReference": _list(REF),
        "bodySite": _list(CC),
        "outcome": CC,
        "report": _list(REF),
        "complication": _list(CC),
        "followUp": _list(CC),
        "usedCode": _list(CC),
    },
    "DiagnosticReport": {
        **_COMMON,
        "basedOn": _list(REF),
        "status": S,
        "category": _list(CC),
        "code": CC,
        "subject": SUBJECT_REF,
        "encounter": REF,
        "effectiveDateTime": S,
        "effectivePeriod": PERIOD,
        "issued": S,
        "performer": _list(REF),
        "resultsInterpreter": _list(REF),
        "specimen": _list(REF),
        "result": _list(REF),
        "imagingStudy": _list(REF),
        "conclusion": S,
        "conclusionCode": _list(CC),
        "presentedForm": _list(ATTACHMENT),
    },
    "Immunization": {
        **_COMMON,
        "status": S,
        "statusReason": CC,
        "vaccineCode": CC,
        "patient": SUBJECT_REF,
        "encounter": REF,
        "occurrenceDateTime": S,
        "occurrenceString": S,
        "recorded": S,
        "primarySource": B,
        "reportOrigin": CC,
        "location": REF,
        "manufacturer": REF,
        "lotNumber": S,
        "expirationDate": S,
        "site": CC,
        "route": CC,
        "doseQuantity": QUANTITY,
        "performer": _list(_struct(function=CC, actor=REF)),
        "reasonCode": _list(CC),
        "reasonReference": _list(REF),
        "isSubpotent": B,
        "programEligibility": _list(CC),
        "fundingSource": CC,
        "protocolApplied": _list(
            _struct(series=S, targetDisease=_list(CC), doseNumberString=S, seriesDosesString=S)
        ),
    },
    "AllergyIntolerance": {
        **_COMMON,
        "clinicalStatus": CC,
        "verificationStatus": CC,
        "type": S,
        "category": _list(S),
        "criticality": S,
        "code": CC,
        "patient": SUBJECT_REF,
        "encounter": REF,
        "onsetDateTime": S,
        "onsetPeriod": PERIOD,
        "onsetString": S,
        "onsetAge": QUANTITY,
        "recordedDate": S,
        "recorder": REF,
        "asserter": REF,
        "lastOccurrence": S,
        "reaction": _list(
            _struct(
                substance=CC,
                manifestation=_list(CC),
                onset=S,
                severity=S,
                exposureRoute=CC,
            )
        ),
    },
}
SCHEMAS = {rtype: pa.schema(list(fields.items())) for rtype, fields in SHAPES.items()}
_DATATYPES = {CODING, CC, REF, SUBJECT_REF, PERIOD, QUANTITY, RANGE, RATIO, ATTACHMENT}
REFERENCED = {"Patient", "Encounter"}  # their remapped ids are kept for the references
LEARN_SCHEMA = pa.schema(
    [("resourceType", S), ("id", S), ("identifier", _list(_struct(system=S, value=S)))]
)
# keys whose text is never a date: the per-record path does not shift them
NOT_DATES = {"system", "code", "version", "reference", "id", "url", "value", "unit"}
# keys whose text is a date or date-time (read strictly: anything else goes back one by one)
DATE_KEYS = {
    "start",
    "end",
    "effectiveDateTime",
    "effectiveInstant",
    "issued",
    "recordedDate",
    "authoredOn",
    "onsetDateTime",
    "abatementDateTime",
    "performedDateTime",
    "occurrenceDateTime",
    "recorded",
    "expirationDate",
    "deceasedDateTime",
    "valueDateTime",
    "lastOccurrence",
    "onset",
    "creation",
}
SUBJECT_FIELD = {
    "Patient": None,
    "Immunization": "patient",
    "AllergyIntolerance": "patient",
}
CHOICES = {  # choice elements read with the per-record path's _choice: one variant at most
    "Observation": ("effective", "value"),
    "Condition": ("onset",),
    "Procedure": ("performed",),
    "DiagnosticReport": ("effective",),
    "Immunization": ("occurrence",),
    "AllergyIntolerance": ("onset",),
}


def is_variant(name: str, prefix: str) -> bool:
    """Whether ``name`` is a variant of the choice element ``prefix`` (valueQuantity of value)."""
    return name.startswith(prefix) and name != prefix and name[len(prefix)].isupper()


# -- the shapes as polars types ------------------------------------------------------------------
def polars_dtype(dtype: pa.DataType) -> pl.DataType:
    if pa.types.is_struct(dtype):
        return pl.Struct(
            [
                pl.Field(f.name, polars_dtype(f.type))
                for f in (dtype.field(i) for i in range(dtype.num_fields))
            ]
        )
    if pa.types.is_list(dtype) or pa.types.is_large_list(dtype):
        return pl.List(polars_dtype(dtype.value_type))
    return {S: pl.String, F: pl.Float64, B: pl.Boolean, I64: pl.Int64}[dtype]


class _PolarsShapes(dict):
    """Polars types of the shapes, made on first use."""

    def __missing__(self, rtype: str) -> dict[str, pl.DataType]:
        self[rtype] = {name: polars_dtype(t) for name, t in SHAPES[rtype].items()}
        return self[rtype]


POLARS_SHAPES = _PolarsShapes()


# -- parts of a shape: what the lines of a batch use of it -----------------------------------------
def shape_part(actual: pa.DataType, shape: pa.DataType) -> pa.DataType | None:
    """The part of ``shape`` that ``actual`` (a decoded type) holds, with the shape's types.
    FHIR datatypes (Coding, Quantity, ...) are kept whole: expressions read their fields."""
    if pa.types.is_struct(shape):
        if not pa.types.is_struct(actual):
            return None
        if shape in _DATATYPES:
            return shape
        fields = []
        for i in range(actual.num_fields):
            name = actual.field(i).name
            j = shape.get_field_index(name)
            if j >= 0:
                inner = shape_part(actual.field(i).type, shape.field(j).type)
                fields.append(pa.field(name, inner if inner is not None else shape.field(j).type))
        return pa.struct(fields)
    if pa.types.is_list(shape):
        if not pa.types.is_list(actual):
            return None
        inner = shape_part(actual.value_type, shape.value_type)
        return pa.list_(inner if inner is not None else shape.value_type)
    return shape


def merge_parts(a: pa.DataType, b: pa.DataType) -> pa.DataType:
    """Two parts of one shape, merged (fields in first-seen order)."""
    if pa.types.is_struct(a) and pa.types.is_struct(b):
        fields = {a.field(i).name: a.field(i).type for i in range(a.num_fields)}
        for i in range(b.num_fields):
            name, dtype = b.field(i).name, b.field(i).type
            fields[name] = merge_parts(fields[name], dtype) if name in fields else dtype
        return pa.struct(list(fields.items()))
    if pa.types.is_list(a) and pa.types.is_list(b):
        return pa.list_(merge_parts(a.value_type, b.value_type))
    return a
