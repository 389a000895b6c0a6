"""The :class:`~hdh_assets.workspaces.delivery.ClusterApi` over the official Kubernetes client.

Kept apart from ``delivery.py`` so that importing the delivery logic (and the GitOps target,
the default) does not import the Kubernetes client.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from kubernetes.client import ApiClient
from kubernetes.config import new_client_from_config
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import NotFoundError
from kubernetes.dynamic.resource import Resource

from hdh_assets.workspaces.kube_objects import KindRef, ObjectRef


class KubernetesClusterApi:
    """Server-side apply, labelled listing and deletion through ``DynamicClient``.

    Discovery (which kinds exist, their paths, whether they are namespaced) is done by the
    client against the API server; ``discovery_cache`` is where it keeps the result between
    runs (the client's default is a file in the temp directory named after the server URL).
    """

    def __init__(self, client: DynamicClient, api_client: ApiClient | None = None) -> None:
        self.client = client
        self._api_client = api_client

    @classmethod
    def from_kubeconfig(
        cls,
        path: Path | str,
        context: str | None = None,
        *,
        discovery_cache: Path | None = None,
    ) -> KubernetesClusterApi:
        """Connect as the kubeconfig says (its current context unless ``context`` is given)."""
        api_client = new_client_from_config(
            config_file=str(path), context=context, persist_config=False
        )
        cache = str(discovery_cache) if discovery_cache else None
        return cls(DynamicClient(api_client, cache_file=cache), api_client)

    def _resource(self, kind_ref: KindRef) -> Resource:
        return self.client.resources.get(api_version=kind_ref.api_version, kind=kind_ref.kind)

    def apply(self, obj: dict, *, field_manager: str) -> dict:
        """Server-side apply; ``force`` because the platform owns these fields by design."""
        ref = ObjectRef.of(obj)
        applied = self._resource(ref.kind_ref).server_side_apply(
            body=obj,
            name=ref.name,
            namespace=ref.namespace,
            field_manager=field_manager,
            force_conflicts=True,
        )
        return applied.to_dict()

    def list_managed(self, kind_ref: KindRef, label_selector: str) -> list[dict]:
        """Matching objects of every namespace (list items lack apiVersion/kind: set them)."""
        listed = self._resource(kind_ref).get(label_selector=label_selector).to_dict()
        items = listed.get("items") or []
        for item in items:
            item.setdefault("apiVersion", kind_ref.api_version)
            item.setdefault("kind", kind_ref.kind)
        return items

    def delete(self, obj_ref: ObjectRef) -> None:
        """Delete (background propagation); an object already gone is what we wanted."""
        with contextlib.suppress(NotFoundError):
            self._resource(obj_ref.kind_ref).delete(
                name=obj_ref.name,
                namespace=obj_ref.namespace,
                propagation_policy="Background",
            )

    def close(self) -> None:
        """Release the connection pool."""
        if self._api_client is not None:
            self._api_client.close()

    def __enter__(self) -> KubernetesClusterApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
