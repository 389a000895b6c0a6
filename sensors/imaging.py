"""The DICOMweb service's health, recorded where operators look: an observation of
``imaging/dicom_studies`` every few minutes with what the service serves and how its requests
went (counts since it started, by route and status class)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import dagster as dg

from dicomweb.tokens import Tokens
from hdh_assets.imaging.viewer import dicomweb_url
from resources.platform import HomeResource

STUDIES = dg.AssetKey(["imaging", "dicom_studies"])
TIMEOUT_SECONDS = 10


def health_metadata(health: dict, root: str) -> dict[str, dg.MetadataValue]:
    """What an operator reads on the asset page (pure: the health answer in, metadata out)."""
    requests = health.get("requests", {})
    total = sum(sum(by_status.values()) for by_status in requests.values())
    errors = sum(
        count
        for by_status in requests.values()
        for status, count in by_status.items()
        if status == "5xx"
    )
    refused = sum(
        count
        for by_status in requests.values()
        for status, count in by_status.items()
        if status == "4xx"
    )
    rows = [
        f"| {route} | " + " | ".join(str(by.get(s, 0)) for s in ("2xx", "4xx", "5xx")) + " |"
        for route, by in sorted(requests.items())
    ]
    table = "\n".join(["| route | 2xx | 4xx | 5xx |", "|---|---|---|---|", *rows])
    return {
        "dicomweb_status": dg.MetadataValue.text(str(health.get("status", "unknown"))),
        "dicomweb_root": dg.MetadataValue.url(root),
        "studies_served": dg.MetadataValue.int(int(health.get("studies", 0))),
        "instances_served": dg.MetadataValue.int(int(health.get("instances", 0))),
        "excluded_subjects": dg.MetadataValue.int(int(health.get("excluded_subjects", 0))),
        "requests_since_start": dg.MetadataValue.int(total),
        "requests_refused_4xx": dg.MetadataValue.int(refused),
        "requests_failed_5xx": dg.MetadataValue.int(errors),
        "requests_by_route": dg.MetadataValue.md(table if rows else "(no request yet)"),
    }


def read_health(root: str, token: str) -> dict:
    request = urllib.request.Request(f"{root}/health", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as answer:
        return json.loads(answer.read())


@dg.sensor(
    name="dicomweb_health_sensor",
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Every five minutes, asks the DICOMweb service (HDH_DICOMWEB_URL) for its health "
    "with a short operator token and records it as an observation of imaging/dicom_studies: "
    "studies and instances served, excluded people, requests by route and status class since "
    "the service started. When the service does not answer, the tick is skipped and says why.",
)
def dicomweb_health_sensor(
    context: dg.SensorEvaluationContext, hdh_home: HomeResource
) -> dg.SensorResult | dg.SkipReason:
    root = dicomweb_url()
    token = Tokens.for_home(hdh_home.home).issue(None, 60)
    try:
        health = read_health(root, token)
    except (OSError, ValueError) as error:
        reason = getattr(error, "reason", None) or type(error).__name__
        return dg.SkipReason(f"the DICOMweb service at {root} did not answer: {reason}")
    observation = dg.AssetObservation(asset_key=STUDIES, metadata=health_metadata(health, root))
    return dg.SensorResult(asset_events=[observation])
