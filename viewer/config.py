"""The viewer's ``app-config.js``, rendered for one DICOMweb data source (pure: text in, text out).

OHIF reads ``window.config`` from ``/app-config.js`` before its bundle starts. The platform's
data source is a DICOMweb one (QIDO-RS, WADO-RS, bulk data, STOW-RS) at ``root``, normally the
same-origin proxy path ``/dicom-web`` of ``server.py``, so the browser holds no token. Values are
written with ``json.dumps``: a title or root cannot break out of the JavaScript.

Saving. OHIF's segmentation panel stores a SEG with ``dataSource.store.dicom`` (STOW-RS to
``wadoRoot/studies``) into the active data source; ``supportsStow`` marks this one as a store
target. ``dicomUploadEnabled`` (the study list's upload of arbitrary local DICOM files) stays off:
the service takes derived objects only and would refuse the images such an upload carries.

Signing in. With a ``SignIn``, OHIF's own OpenID Connect client (``oidc``: oidc-client-ts, the
authorization code flow with PKCE, for ``response_type`` ``code``) signs the person in at the
provider and sends their access token with every DICOMweb request, which the proxy passes on
and the service checks. The token is asked for the DICOMweb resource (RFC 8707) at both the
authorization and the token endpoint, so that it is a JWT the service can verify; such a token
is no credential for the provider's userinfo endpoint, so the profile comes from the ID token.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

DATA_SOURCE = "@ohif/extension-default.dataSourcesModule.dicomweb"
SOURCE_NAME = "hdh"
ACCEPT_ANY_TRANSFER_SYNTAX = "multipart/related; type=application/octet-stream; transfer-syntax=*"
# OHIF's routes for the provider's answers; the provider registers them for the viewer client.
CALLBACK_PATH = "/callback"
SILENT_RENEW_PATH = "/silent-refresh.html"
SIGNED_OUT_PATH = "/"
DEFAULT_SCOPE = "openid profile email groups"


@dataclass(frozen=True)
class SignIn:
    """The provider the viewer signs people in with, as the viewer's public client."""

    issuer: str
    client_id: str
    audience: str  # the DICOMweb service's resource indicator: its tokens' ``aud``
    scope: str = DEFAULT_SCOPE
    # Off: the development provider has no revocation endpoint, and a JWT access token cannot
    # be revoked anyway; signing out ends the session at the provider.
    revoke_on_sign_out: bool = False
    extra: dict = field(default_factory=dict)  # further oidc-client-ts settings, merged last


def oidc_config(sign_in: SignIn) -> list[dict]:
    """OHIF's ``oidc`` setting (it uses the first entry): the keys are oidc-client-ts settings,
    passed on as they are; the paths are made absolute on the viewer's origin by OHIF."""
    return [
        {
            "authority": sign_in.issuer,
            "client_id": sign_in.client_id,
            "redirect_uri": CALLBACK_PATH,
            "silent_redirect_uri": SILENT_RENEW_PATH,
            "post_logout_redirect_uri": SIGNED_OUT_PATH,
            "response_type": "code",
            "scope": sign_in.scope,
            "resource": sign_in.audience,
            "extraTokenParams": {"resource": sign_in.audience},
            "loadUserInfo": False,
            "automaticSilentRenew": True,
            "revokeAccessTokenOnSignout": sign_in.revoke_on_sign_out,
            **sign_in.extra,
        }
    ]


@dataclass(frozen=True)
class ViewerOptions:
    """What a deployment may tune; the defaults are what the browser test proves."""

    show_study_list: bool = True
    max_web_workers: int = 3
    # Requests in flight per kind; HTTP/1.1 to one origin, so modest.
    max_requests: dict = field(
        default_factory=lambda: {"interaction": 100, "thumbnail": 5, "prefetch": 10}
    )
    supports_fuzzy_matching: bool = False
    supports_wildcard: bool = True
    extra: dict = field(default_factory=dict)  # merged last into window.config


def data_source(root: str, title: str, options: ViewerOptions) -> dict:
    root = root.rstrip("/")
    return {
        "namespace": DATA_SOURCE,
        "sourceName": SOURCE_NAME,
        "configuration": {
            "friendlyName": title,
            "name": SOURCE_NAME,
            "qidoRoot": root,
            "wadoRoot": root,
            "wadoUriRoot": root,
            "qidoSupportsIncludeField": False,
            "imageRendering": "wadors",
            "thumbnailRendering": "wadors",
            "enableStudyLazyLoad": True,
            "supportsFuzzyMatching": options.supports_fuzzy_matching,
            "supportsWildcard": options.supports_wildcard,
            "staticWado": False,
            "singlepart": "bulkdata,video",
            "acceptHeader": [ACCEPT_ANY_TRANSFER_SYNTAX],
            "bulkDataURI": {"enabled": True, "relativeResolution": "studies"},
            "omitQuotationForMultipartRequest": True,
            "supportsStow": True,
            "dicomUploadEnabled": False,
        },
    }


def render_app_config(
    root: str = "/dicom-web",
    title: str = "HDH imaging",
    options: ViewerOptions | None = None,
    sign_in: SignIn | None = None,
) -> str:
    """The text of ``app-config.js`` for a DICOMweb data source at ``root``; with ``sign_in``
    the viewer signs people in before it shows anything."""
    options = options or ViewerOptions()
    oidc = {"oidc": oidc_config(sign_in)} if sign_in else {}
    config = {
        "name": "hdh",
        "routerBasename": "/",
        "extensions": [],
        "modes": [],
        "customizationService": {},
        "showStudyList": options.show_study_list,
        "maxNumberOfWebWorkers": options.max_web_workers,
        "showWarningMessageForCrossOrigin": False,
        "showCPUFallbackMessage": True,
        "showLoadingIndicator": True,
        "strictZSpacingForVolumeViewport": True,
        "groupEnabledModesFirst": True,
        "maxNumRequests": options.max_requests,
        "showErrorDetails": "always",
        "defaultDataSourceName": SOURCE_NAME,
        "dataSources": [data_source(root, title, options)],
        **oidc,
        **options.extra,
    }
    body = json.dumps(config, indent=2, ensure_ascii=True)
    # "</script>" cannot close anything in a .js file, but keep the text inert anyway.
    body = body.replace("</", "<\\/")
    return (
        "/** Rendered by the HDH platform (viewer/config.py); do not edit. */\n"
        f"window.config = {body};\n"
        f"document.title = {json.dumps(title)};\n"
    )
