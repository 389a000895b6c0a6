"""The DICOMweb service's health reaches operators as an observation of imaging/dicom_studies,
read from the running service by the sensor, with a token the sensor issues itself."""

from __future__ import annotations

import dagster as dg
import requests

from dicomweb.tokens import SECRET_ENV
from hdh_assets.imaging.viewer import DICOMWEB_URL_ENV
from resources.platform import HomeResource
from sensors.imaging import STUDIES, dicomweb_health_sensor
from tests.dicomweb.conftest import TOKEN_KEY, Store
from tests.dicomweb.servers import free_port


def _tick(store: Store):
    context = dg.build_sensor_context(
        resources={"hdh_home": HomeResource(root=str(store.home.root))}
    )
    return dicomweb_health_sensor(context)


def test_the_sensor_records_what_the_running_service_serves(store, service, auth, monkeypatch):
    monkeypatch.setenv(DICOMWEB_URL_ENV, service.dicomweb)
    monkeypatch.setenv(SECRET_ENV, TOKEN_KEY.decode())
    # one refused and one unknown-study request, so the counts have something to show
    assert requests.get(service.dicomweb + "/studies").status_code == 401
    unknown = requests.get(service.dicomweb + "/studies/2.25.1/series", headers=auth)
    assert unknown.status_code == 404

    result = _tick(store)

    assert isinstance(result, dg.SensorResult), result
    (observation,) = result.asset_events
    assert observation.asset_key == STUDIES
    metadata = {k: v.value for k, v in observation.metadata.items()}
    studies = requests.get(service.dicomweb + "/studies", headers=auth).json()
    assert metadata["studies_served"] == len(studies) > 0
    assert metadata["instances_served"] > metadata["studies_served"]
    assert metadata["requests_refused_4xx"] >= 2
    assert metadata["requests_since_start"] >= metadata["requests_refused_4xx"]
    assert "| route | 2xx | 4xx | 5xx |" in metadata["requests_by_route"]
    assert metadata["dicomweb_root"] == service.dicomweb


def test_a_service_that_does_not_answer_skips_the_tick_and_says_where(store, monkeypatch):
    root = f"http://127.0.0.1:{free_port()}/dicom-web"
    monkeypatch.setenv(DICOMWEB_URL_ENV, root)
    monkeypatch.setenv(SECRET_ENV, TOKEN_KEY.decode())

    result = _tick(store)

    assert isinstance(result, dg.SkipReason)
    assert root in result.skip_message and "did not answer" in result.skip_message
