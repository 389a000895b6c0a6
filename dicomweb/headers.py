"""Reading stored files for what the index does not hold, and their DICOM JSON (PS3.18 F.2).

QIDO needs a few header attributes per study or series (accession number, referring physician,
study ID, ...): the header of one representative file is read once, without its pixel data, and
kept in a bounded cache keyed by the file's SHA-256 (a re-written file is read again). Metadata
reads whole files, since it must say where every bulk value is.

Binary values (OB, OD, OF, OL, OV, OW, UN), pixel data among them, are never inlined: the JSON
gives a ``BulkDataURI`` under the instance's ``/bulk/`` path, and :func:`bulk_value` finds the
value again from that path (``<tag>`` or ``<sequence tag>/<item>/<tag>...``, items from 1).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import pydicom
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

BULK_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}
HEADER_CACHE_SIZE = 4096


class StoredFiles:
    """The pseudonymised store, read only through paths the index gives."""

    def __init__(self, store_root: Path, cache_size: int = HEADER_CACHE_SIZE):
        self.root = store_root.resolve()
        self._header = lru_cache(maxsize=cache_size)(self._read_header)

    def path(self, store_path: str) -> Path | None:
        """The file of an index row, or None when it is gone (erased since the index was read)
        or would lie outside the store."""
        path = (self.root / store_path).resolve()
        if not path.is_relative_to(self.root) or not path.is_file():
            return None
        return path

    def header(self, store_path: str, sha256: str) -> Dataset | None:
        """The file's attributes without pixel data, read once per content."""
        return self._header(store_path, sha256)

    def _read_header(self, store_path: str, sha256: str) -> Dataset | None:
        path = self.path(store_path)
        if path is None:
            return None
        return pydicom.dcmread(path, stop_before_pixels=True)

    def dataset(self, store_path: str) -> Dataset | None:
        """The whole file (metadata, frames, bulk data)."""
        path = self.path(store_path)
        return pydicom.dcmread(path) if path is not None else None

    def raw(self, store_path: str) -> bytes | None:
        path = self.path(store_path)
        return path.read_bytes() if path is not None else None


def element_json(
    element: DataElement, bulk_uri: Callable[[str], str] | None = None, path: str = ""
) -> dict:
    """One attribute as DICOM JSON; binary values as a BulkDataURI (inline without a URI maker,
    which QIDO never needs for the attributes it returns)."""
    vr = element.VR
    tag = f"{element.tag:08X}"
    if vr == "SQ":
        items = [
            dataset_json(item, bulk_uri, f"{path}{tag}/{index}/")
            for index, item in enumerate(element.value or [], start=1)
        ]
        return {"vr": vr, "Value": items} if items else {"vr": vr}
    if vr in BULK_VRS:
        if element.value is None or len(element.value) == 0:
            return {"vr": vr}
        if bulk_uri is not None:
            return {"vr": vr, "BulkDataURI": bulk_uri(f"{path}{tag}")}
    found = element.to_json_dict(None, sys.maxsize)
    values = found.get("Value")
    if values and len(values) > 1:  # an empty value among several is null (PS3.18 F.2.5)
        found["Value"] = [None if v == "" else v for v in values]
    return found


def dataset_json(
    dataset: Dataset, bulk_uri: Callable[[str], str] | None = None, path: str = ""
) -> dict:
    """A dataset as DICOM JSON, File Meta Information left out (it describes the file, not
    the instance, and is not part of a DICOMweb answer)."""
    out = {}
    for element in dataset:
        if element.tag.group == 0x0002:
            continue
        out[f"{element.tag:08X}"] = element_json(element, bulk_uri, path)
    return out


def header_attribute(dataset: Dataset | None, tag: str) -> tuple[dict | None, object]:
    """(DICOM JSON, value for matching) of one top-level attribute; (None, None) when absent.
    Matching values are text: a multi-valued attribute gives a list of texts."""
    if dataset is None:
        return None, None
    number = int(tag, 16)
    if number not in dataset:
        return None, None
    element = dataset[number]
    value = element.value
    if element.VR == "SQ" or element.VR in BULK_VRS:
        raw = None
    elif type(value).__name__ == "MultiValue" or isinstance(value, list):
        raw = [str(v) for v in value]
    else:
        raw = str(value) if value not in (None, "") else None
    return element_json(element), raw


def bulk_value(dataset: Dataset, path: str) -> bytes | None:
    """The bytes of the binary attribute at a BulkDataURI path, or None when there is none."""
    parts = [p for p in path.split("/") if p]
    current: Dataset = dataset
    try:
        while parts:
            number = int(parts.pop(0), 16)
            if number not in current:
                return None
            element = current[number]
            if not parts:
                if element.VR not in BULK_VRS or element.value is None:
                    return None
                return bytes(element.value)
            index = int(parts.pop(0))
            if element.VR != "SQ" or not 1 <= index <= len(element.value):
                return None
            current = element.value[index - 1]
    except ValueError:
        return None
    return None
