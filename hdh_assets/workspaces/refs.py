"""How a Kubernetes object and its kind are named: shared by every delivery target."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, order=True)
class KindRef:
    """A kind as the API serves it (``apiVersion`` + ``kind``)."""

    api_version: str
    kind: str


@dataclass(frozen=True, order=True)
class ObjectRef:
    """Identity of one object: what a server keys it by."""

    api_version: str
    kind: str
    namespace: str | None
    name: str

    @classmethod
    def of(cls, obj: Mapping[str, Any]) -> ObjectRef:
        meta = obj.get("metadata") or {}
        return cls(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"])

    @property
    def kind_ref(self) -> KindRef:
        return KindRef(self.api_version, self.kind)

    def __str__(self) -> str:
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.kind} {where}"
