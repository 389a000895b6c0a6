"""Imaging assets."""

from hdh_assets import owners
from hdh_assets.landing.assets import landing_inventory_asset

landed_dicom_files = landing_inventory_asset(
    source="dicom",
    group="imaging",
    owners=[owners.IMAGING, owners.PLATFORM],
    kinds={"dicom"},
    expected_formats={"dicom", "dicomdir", "zip", "tar.gz"},
    description=(
        "Inventory of one landed DICOM batch (landing/dicom/<batch>/): one row per file with its "
        "content hash, sniffed format (DICM preamble, archive, other) and size. Paths are not kept: "
        "deliveries name files after patients. The 'landed' side of imaging reconciliation."
    ),
)

assets = [landed_dicom_files]
