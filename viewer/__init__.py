"""The OHIF Viewer v3 for a project: the prebuilt viewer of ``@ohif/app`` (installed under
``viewer/node_modules`` by ``make viewer-deps``), served on its own port with an app-config.js
the platform renders, and a same-origin proxy to the DICOMweb service that adds the project's
bearer token server side (``server.py``)."""
