"""Workspace specs and manifests; ``write_projects`` also feeds benchmarks/workspaces_render.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

PRODUCTS = (
    "care_consumption_per_month",
    "care_consumption_per_subject_month",
    "chronic_medication_cohort",
    "diabetes_patients",
    "hba1c_trajectory",
    "imaging_clinical_linkage",
    "studies_per_modality_month",
)
TOPICS = ("cardio", "onco", "neuro", "diabeto", "pneumo", "nephro", "hepato", "rheumato")
PYTHON_POOL = ("lifelines>=0.29", "statsmodels", "scikit-learn>=1.5", "pydicom>=3,<4", "seaborn")
R_POOL = ("survival", "data.table", "ggplot2", "lme4")
AUTHORISATIONS = 10


def authorisation(index: int) -> str:
    return f"CNIL-DR-2025-{index:04d}"


def approvals_document() -> dict[str, Any]:
    """Ten authorisations, each approving four products (any version of some, ranges of others)."""
    document = {}
    for a in range(AUTHORISATIONS):
        products = {
            PRODUCTS[(a + k) % len(PRODUCTS)]: ("*" if k % 2 else ">=1.0.0,<2.0.0")
            for k in range(4)
        }
        document[authorisation(a)] = {"description": f"generated {a}", "products": products}
    return document


def project_id(index: int) -> str:
    """``cardio-000``; the first of each topic is the bare topic, a prefix of the others' ids."""
    topic = TOPICS[index % len(TOPICS)]
    return topic if index < len(TOPICS) else f"{topic}-{index:03d}"


def project_document(index: int) -> dict[str, Any]:
    """A valid spec whose content varies with ``index``; members are unique to the project."""
    pid = project_id(index)
    auth = index % AUTHORISATIONS
    approved = list(approvals_document()[authorisation(auth)]["products"])
    roles = ("owner", "analyst", "viewer")
    members = [
        {"user": f"member{k}.{pid}@site{index % 7}.example", "role": roles[k % 3] if k else "owner"}
        for k in range(1 + index % 4)
    ]
    return {
        "id": pid,
        "title": f"Generated project {index}",
        "authorisation": authorisation(auth),
        "members": members,
        "grants": [{"product": p, "version": "1.0.0"} for p in approved[: 1 + index % 4]],
        "compute": {
            "cpu": ("1", "2", "4", "500m")[index % 4],
            "memory": ("2Gi", "4Gi", "8Gi")[index % 3],
            "storage": ("10Gi", "50Gi")[index % 2],
        },
        "applications": {
            "jupyterlab": index % 5 != 4,
            "rstudio": index % 3 == 0 or index % 5 == 4,
            **({"gitlab": f"https://gitlab.hdh.example/{pid}"} if index % 4 == 0 else {}),
        },
        "packages": {
            "python": [PYTHON_POOL[(index + k) % len(PYTHON_POOL)] for k in range(index % 3)],
            "r": [R_POOL[(index + k) % len(R_POOL)] for k in range(index % 2 + 1)],
        },
        "expires": "2027-12-31",
    }


def write_projects(root: Path, count: int) -> Path:
    """``root/approvals.yaml`` and ``root/projects/<id>.yaml`` for ``count`` projects."""
    projects = root / "projects"
    projects.mkdir(parents=True, exist_ok=True)
    (root / "approvals.yaml").write_text(yaml.safe_dump(approvals_document(), sort_keys=True))
    for index in range(count):
        document = project_document(index)
        (projects / f"{document['id']}.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    return projects
