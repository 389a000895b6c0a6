"""QIDO-RS searches (PS3.18 8.3.4, 10.6) over the index view, matching as PS3.4 C.2.2.2 says.

Matching: single value (exact; case-insensitive for person names), UID lists (comma separated
or the key repeated), wildcards ``*`` and ``?`` for the string VRs that allow them, ranges for
dates and times (``20240101-20240131``, ``20240101-``, ``-20240131``), and universal matching
for an empty value or ``*``. Keys are keywords or tags (``PatientID`` or ``00100020``).
Anything the service does not do is refused with a 400 naming the parameter, never ignored:
a client must not believe it filtered when it did not.

Index values are matched in memory first; keys read from file headers (accession number,
referring physician, ...) are matched last, on the remaining candidates only.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import polars as pl
from pydicom.datadict import tag_for_keyword

from dicomweb.attributes import (
    HEADER,
    NUMERIC_VRS,
    Attribute,
    Level,
    json_value,
    matching_keys,
    resolve,
    returned,
    source_of,
    vr_of,
)
from dicomweb.errors import bad_request
from dicomweb.headers import StoredFiles, header_attribute
from dicomweb.index import IndexView

MAX_RESULTS = 1000
SERVICE_NAME = "hdh-dicomweb"
TRUNCATED_WARNING = (
    f'299 {SERVICE_NAME}: "The number of results exceeded the maximum supported by the server. '
    'Additional results can be requested."'
)
CONTROL = ("limit", "offset", "includefield", "fuzzymatching")
WILDCARD_VRS = {"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"}
RANGE_VRS = {"DA", "TM"}
LIST_KEYWORDS = {"ModalitiesInStudy"}  # "CT\MR" or "CT,MR": a study with any of them matches
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_DATE = re.compile(r"^[0-9]{8}$")
_TIME = re.compile(r"^([0-9]{2}){1,3}(\.[0-9]{1,6})?$")
# includefield=all: the catalogued attributes plus these descriptive ones, when present.
ALL_EXTRA = {
    Level.STUDY: ("StudyDescription", "PatientAge", "PatientSize", "PatientWeight"),
    Level.SERIES: ("SeriesDate", "SeriesTime", "BodyPartExamined", "ProtocolName", "Laterality"),
    Level.INSTANCE: (
        "ImageType",
        "ContentDate",
        "ContentTime",
        "SamplesPerPixel",
        "PhotometricInterpretation",
        "PixelSpacing",
        "SliceThickness",
        "ImagePositionPatient",
        "ImageOrientationPatient",
    ),
}


@dataclass(frozen=True)
class Filter:
    keyword: str
    tag: str
    vr: str
    kind: str  # uids, value, wildcard or range
    values: tuple

    def matches(self, value: Any) -> bool:
        values = value if isinstance(value, list) else [value]
        return any(self._one(v) for v in values if v is not None and v != "")

    def _one(self, value: Any) -> bool:
        text = str(value).strip()
        if self.kind == "uids":
            return text in self.values
        if self.kind == "wildcard":
            return self.values[0].fullmatch(text) is not None
        if self.kind == "range":
            low, high = self.values
            key = _time_key(text) if self.vr == "TM" else text
            return (not low or key >= low) and (not high or key <= high)
        if self.vr == "PN":
            return any(text.casefold() == v.casefold() for v in self.values)
        if self.vr == "TM":
            return _time_key(text) in self.values
        if self.vr in NUMERIC_VRS:
            try:
                return int(float(text)) in self.values
            except ValueError:
                return False
        return text in self.values


@dataclass
class Query:
    level: Level
    filters: list[Filter] = field(default_factory=list)
    includes: list[Attribute] = field(default_factory=list)
    limit: int | None = None
    offset: int = 0


@dataclass
class SearchResult:
    items: list[dict]
    warning: str | None = None


def _time_key(text: str) -> str:
    """HHMMSS.FFFFFF with missing parts as zeros, so times compare as text."""
    whole, _, fraction = text.replace(":", "").partition(".")
    return f"{whole.ljust(6, '0')}.{fraction.ljust(6, '0')}"


def _check(vr: str, key: str, value: str) -> str:
    if vr == "DA" and not _DATE.match(value):
        raise bad_request(f"{key}: '{value}' is not a date (YYYYMMDD)")
    if vr == "TM":
        if not _TIME.match(value.replace(":", "")):
            raise bad_request(f"{key}: '{value}' is not a time (HHMMSS.FFFFFF)")
        return _time_key(value)
    if vr in NUMERIC_VRS:
        try:
            return int(value)
        except ValueError:
            raise bad_request(f"{key}: '{value}' is not an integer") from None
    return value


def parse_filter(key: str, level: Level, given: list[str]) -> Filter | None:
    tag, keyword = resolve(key, "query parameter")
    if keyword not in matching_keys(level):
        raise bad_request(
            f"query parameter '{key}' is not a matching key this service supports at the "
            f"{level.value} level"
        )
    vr = vr_of(tag)
    if vr == "UI":
        uids = tuple(u.strip() for text in given for u in re.split(r"[,\\]", text) if u.strip())
        if not uids:
            return None
        bad = [u for u in uids if not _UID.match(u) or len(u) > 64]
        if bad:
            raise bad_request(f"{key}: '{bad[0]}' is not a UID (wildcards are not allowed)")
        return Filter(keyword, tag, vr, "uids", uids)
    if len(given) > 1:
        raise bad_request(f"query parameter '{key}' may be given only once")
    value = given[0].strip()
    if value in ("", "*"):
        return None  # universal matching
    if keyword in LIST_KEYWORDS and re.search(r"[,\\]", value):
        values = tuple(v for v in re.split(r"[,\\]", value) if v)
        if any(c in v for v in values for c in "*?"):
            raise bad_request(f"{key}: wildcards are not allowed in a list of values")
        return Filter(keyword, tag, vr, "value", values)
    if vr in RANGE_VRS and "-" in value:
        low, _, high = value.partition("-")
        if not low and not high:
            raise bad_request(f"{key}: a range needs at least one bound")
        bounds = tuple(_check(vr, key, b) if b else "" for b in (low, high))
        return Filter(keyword, tag, vr, "range", bounds)
    if "*" in value or "?" in value:
        if vr not in WILDCARD_VRS:
            raise bad_request(f"{key}: wildcards are not allowed for VR {vr}")
        pattern = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in value)
        flags = re.IGNORECASE if vr == "PN" else 0
        return Filter(keyword, tag, vr, "wildcard", (re.compile(pattern, flags | re.DOTALL),))
    return Filter(keyword, tag, vr, "value", (_check(vr, key, value),))


def _non_negative(name: str, values: list[str]) -> int:
    if len(values) > 1:
        raise bad_request(f"query parameter '{name}' may be given only once")
    try:
        number = int(values[0])
    except ValueError:
        raise bad_request(f"{name} must be an integer") from None
    if number < 0 or (name == "limit" and number == 0):
        raise bad_request(f"{name} must be {'positive' if name == 'limit' else 'zero or more'}")
    return number


def parse_query(params: list[tuple[str, str]], level: Level) -> Query:
    """A query from the URL's parameters in order; 400 naming the first one refused. A key
    given by keyword and by tag is one key (its values are one UID list, or refused)."""
    grouped: dict[str, list[str]] = defaultdict(list)
    names: dict[str, str] = {}
    for key, value in params:
        group = key if key in CONTROL else resolve(key, "query parameter")[0]
        names.setdefault(group, key)
        grouped[group].append(value)
    query = Query(level)
    for group, values in grouped.items():
        key = names[group]
        if key == "fuzzymatching":
            if values[-1].lower() == "true":
                raise bad_request("fuzzymatching=true is not supported by this service")
            if values[-1].lower() != "false":
                raise bad_request("fuzzymatching must be true or false")
        elif key == "limit":
            query.limit = _non_negative(key, values)
        elif key == "offset":
            query.offset = _non_negative(key, values)
        elif key == "includefield":
            query.includes = _includes(values, level)
        else:
            found = parse_filter(key, level, values)
            if found is not None:
                query.filters.append(found)
    return query


def _includes(values: list[str], level: Level) -> list[Attribute]:
    names = [n.strip() for text in values for n in text.split(",") if n.strip()]
    if "all" in names:
        listed = [*ALL_EXTRA[level], *(k for u in _uppers(level) for k in ALL_EXTRA[u])]
        extras = [Attribute(k, HEADER, only_if_present=True) for k in listed]
        names = [n for n in names if n != "all"]
    else:
        extras = []
    for name in names:
        _, keyword = resolve(name, "includefield")
        extras.append(Attribute(keyword, source_of(keyword, level), only_if_present=False))
    return extras


def _uppers(level: Level) -> tuple[Level, ...]:
    return {Level.STUDY: (), Level.SERIES: (Level.STUDY,)}.get(level, (Level.STUDY, Level.SERIES))


def retrieve_url(base_url: str, row: dict, level: Level) -> str:
    url = f"{base_url}/studies/{row['StudyInstanceUID']}"
    if level is not Level.STUDY:
        url += f"/series/{row['SeriesInstanceUID']}"
    if level is Level.INSTANCE:
        url += f"/instances/{row['SOPInstanceUID']}"
    return url


class Searcher:
    """Runs queries against one index view, reading headers through ``files`` when needed."""

    def __init__(self, view: IndexView, files: StoredFiles, base_url: str):
        self.view, self.files, self.base_url = view, files, base_url.rstrip("/")

    def frame(self, level: Level) -> pl.DataFrame:
        return {
            Level.STUDY: self.view.studies,
            Level.SERIES: self.view.series,
            Level.INSTANCE: self.view.instances,
        }[level]

    def search(
        self,
        query: Query,
        scope: dict[str, str] | None = None,
        visible: frozenset[str] | None = None,
        max_results: int = MAX_RESULTS,
    ) -> SearchResult:
        frame = self.frame(query.level)
        if visible is not None:
            frame = frame.filter(pl.col("StudyInstanceUID").is_in(sorted(visible)))
        for keyword, uid in (scope or {}).items():
            frame = frame.filter(pl.col(keyword) == uid)
        later = []
        for condition in query.filters:
            if condition.kind == "uids" and condition.keyword in frame.columns:
                frame = frame.filter(pl.col(condition.keyword).is_in(list(condition.values)))
            else:
                later.append(condition)
        # Index values before header values: headers are read for the survivors only.
        later.sort(key=lambda f: f.keyword not in frame.columns)
        rows = [r for r in frame.iter_rows(named=True) if self._matches(r, later)]
        limit = query.limit if query.limit is not None else max_results
        warning = None
        if limit > max_results:
            limit, warning = max_results, TRUNCATED_WARNING
        page = rows[query.offset : query.offset + limit]
        if query.limit is None and len(rows) - query.offset > max_results:
            warning = TRUNCATED_WARNING
        return SearchResult([self.render(r, query) for r in page], warning)

    def _value(self, row: dict, keyword: str) -> Any:
        """An index value, else the header's (of the study's or series' representative file,
        or of the instance itself)."""
        if keyword in row:
            return row[keyword]
        header = self.files.header(row["store_path"], row["sha256"])
        return header_attribute(header, f"{tag_for_keyword(keyword):08X}")[1]

    def _matches(self, row: dict, filters: list[Filter]) -> bool:
        return all(f.matches(self._value(row, f.keyword)) for f in filters)

    def render(self, row: dict, query: Query) -> dict:
        """The DICOM JSON of one match: the level's attributes and the included ones."""
        level, out = query.level, {}
        for attribute in [*returned(level), *query.includes]:
            tag, vr = attribute.tag, attribute.vr
            if tag in out:
                continue
            if attribute.keyword == "RetrieveURL":
                out[tag] = {"vr": vr, "Value": [retrieve_url(self.base_url, row, level)]}
            elif attribute.keyword == "InstanceAvailability":
                out[tag] = {"vr": vr, "Value": ["ONLINE"]}
            elif attribute.keyword in row:  # index and computed values
                out[tag] = json_value(vr, row[attribute.keyword])
            else:
                header = self.files.header(row["store_path"], row["sha256"])
                found, _ = header_attribute(header, tag)
                if found is not None:
                    out[tag] = found
                elif not attribute.only_if_present:
                    out[tag] = {"vr": vr}
        return dict(sorted(out.items()))
