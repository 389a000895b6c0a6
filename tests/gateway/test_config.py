"""The rendered Apache configuration, read as text and checked by ``apache2 -t``."""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

import pytest

from auth.settings import OidcClient, OidcSettings
from gateway import server
from gateway.config import (
    CLIENT_SECRET_ENV,
    PASSPHRASE_ENV,
    Application,
    GatewayConfig,
    GatewayConfigError,
    backchannel_logout_uri,
    dagster_application,
    new_passphrase,
    redirect_uri,
    render_httpd_conf,
    render_landing_page,
    secret_environment,
)


def _gateway(settings: OidcSettings, tmp_path: Path, *apps: Application) -> GatewayConfig:
    applications = apps or (
        dagster_application(settings, "http://127.0.0.1:3000"),
        Application(
            "viewer", "/viewer", "http://127.0.0.1:3003", (settings.referent_group, "project:x")
        ),
    )
    return GatewayConfig("http://127.0.0.1:3004", tmp_path / "run", applications)


def _locations(conf: str) -> dict[str, str]:
    return dict(re.findall(r'<Location "([^"]+)">\n(.*?)</Location>', conf, re.S))


def test_every_application_is_proxied_to_its_groups_only(gateway_settings, tmp_path) -> None:
    gateway = _gateway(gateway_settings, tmp_path)
    locations = _locations(render_httpd_conf(gateway_settings, gateway))
    dagster, viewer = locations["/dagster"], locations["/viewer"]
    assert re.findall(r"Require claim \"([^\"]+)\"", dagster) == [
        "groups:data-referent",
        "groups:operator",
    ]
    assert re.findall(r"Require claim \"([^\"]+)\"", viewer) == [
        "groups:data-referent",
        "groups:project:x",
    ]
    for block in (dagster, viewer):
        assert "AuthType openid-connect" in block and "<RequireAny>" in block
        assert "AuthzSendForbiddenOnFailure On" in block  # signed in without the group: 403
        assert "Require valid-user" not in block and "Require all granted" not in block
        assert 'OIDCUnAuthAction 401 "' in block  # scripts get 401, pages a redirect
    assert 'ProxyPass "http://127.0.0.1:3000/dagster" upgrade=websocket' in dagster
    assert 'ProxyPass "http://127.0.0.1:3003"\n' in viewer  # no websocket asked for
    assert locations["/dagster/graphql"].strip() == "OIDCUnAuthAction 401 true"
    assert "Require valid-user" in locations["/auth/callback"]


def test_groups_and_claim_come_from_the_settings(gateway_settings, tmp_path) -> None:
    settings = dataclasses.replace(
        gateway_settings, groups_claim="roles", referent_group="hdh-ref", operator_group="hdh-ops"
    )
    conf = render_httpd_conf(settings, _gateway(settings, tmp_path))
    assert 'Require claim "roles:hdh-ref"' in conf and 'Require claim "roles:hdh-ops"' in conf
    assert "data-referent" not in conf


def test_sign_in_settings(gateway_settings, tmp_path) -> None:
    gateway = _gateway(gateway_settings, tmp_path)
    conf = render_httpd_conf(gateway_settings, gateway)
    issuer = gateway_settings.issuer
    assert f'OIDCProviderMetadataURL "{issuer}/.well-known/openid-configuration"' in conf
    assert 'OIDCClientID "hdh-gateway"' in conf
    assert 'OIDCRedirectURI "http://127.0.0.1:3004/auth/callback"' in conf
    assert redirect_uri(gateway) == "http://127.0.0.1:3004/auth/callback"
    assert backchannel_logout_uri(gateway) == redirect_uri(gateway) + "?logout=backchannel"
    assert 'OIDCScope "openid profile email groups"' in conf
    assert "OIDCRemoteUserClaim preferred_username" in conf
    assert "Listen 127.0.0.1:3004" in conf
    # The user's name reaches the backends from the gateway only; no token or claim does.
    assert "RequestHeader unset X-Forwarded-User early" in conf
    assert "OIDCAuthNHeader X-Forwarded-User" in conf and "OIDCPassClaimsAs none" in conf
    # Sign-out: the gateway session, then the provider's, back to the public landing page.
    assert re.search(
        r"RedirectMatch 302 \^/logout\$ \"/auth/callback\?logout=http%3A%2F%2F127\.0\.0\.1"
        r"%3A3004%2F\"",
        conf,
    )


def test_no_secret_is_written(gateway_settings, tmp_path) -> None:
    passphrase = new_passphrase()
    conf = render_httpd_conf(gateway_settings, _gateway(gateway_settings, tmp_path))
    assert "s3cret-gateway-value" not in conf and passphrase not in conf
    assert f'OIDCClientSecret "${{{CLIENT_SECRET_ENV}}}"' in conf
    assert f'OIDCCryptoPassphrase "${{{PASSPHRASE_ENV}}}"' in conf
    environment = secret_environment(gateway_settings, passphrase)
    assert environment == {CLIENT_SECRET_ENV: "s3cret-gateway-value", PASSPHRASE_ENV: passphrase}
    assert new_passphrase() != passphrase and len(passphrase) >= 43


def test_refuses_what_apache_would_misread(gateway_settings, tmp_path) -> None:
    with pytest.raises(GatewayConfigError, match="no issuer"):
        render_httpd_conf(OidcSettings(), _gateway(gateway_settings, tmp_path))
    public = dataclasses.replace(
        gateway_settings, clients={**gateway_settings.clients, "gateway": OidcClient("g")}
    )
    with pytest.raises(GatewayConfigError, match="confidential"):
        secret_environment(public, new_passphrase())
    quoted = dataclasses.replace(gateway_settings, issuer='https://x.example/"evil')
    with pytest.raises(GatewayConfigError, match="quote"):
        render_httpd_conf(quoted, _gateway(gateway_settings, tmp_path))
    with pytest.raises(GatewayConfigError, match="no group"):
        Application("x", "/x", "http://127.0.0.1:1", ())
    with pytest.raises(GatewayConfigError, match="spaces"):
        Application("x", "/x", "http://127.0.0.1:1", ("data referent",))
    with pytest.raises(GatewayConfigError, match="plain /path"):
        Application("x", "/x/../y", "http://127.0.0.1:1", ("g",))
    with pytest.raises(GatewayConfigError, match="hide"):
        _gateway(gateway_settings, tmp_path, Application("a", "/auth", "http://h:1", ("g",)))
    with pytest.raises(GatewayConfigError, match="unique"):
        app = Application("a", "/a", "http://h:1", ("g",))
        _gateway(gateway_settings, tmp_path, app, app)
    with pytest.raises(GatewayConfigError, match="root"):
        GatewayConfig("http://127.0.0.1:3004/sub", tmp_path, ())


def test_landing_page_links_the_applications(gateway_settings, tmp_path) -> None:
    page = render_landing_page(_gateway(gateway_settings, tmp_path))
    assert '<a href="/dagster/">Dagster (orchestration)</a>' in page
    assert '<a href="/viewer/">viewer</a>' in page
    assert 'href="/logout"' in page


def test_apache_accepts_the_rendered_configuration(
    apache_ready, gateway_settings, tmp_path
) -> None:
    apps = _gateway(gateway_settings, tmp_path).applications
    gateway = server.prepare(
        gateway_settings, apps, public_url="http://127.0.0.1:3004", run_dir=tmp_path / "run"
    )
    checked = server.config_test(gateway, secret_environment(gateway_settings, new_passphrase()))
    assert checked.returncode == 0, checked.stderr
    assert "Syntax OK" in checked.stderr + checked.stdout
    assert "not defined" not in checked.stderr  # both secrets came from the environment
    # Nothing secret to hide in the folder but the logs, which name the users.
    assert gateway.conf_path.stat().st_mode & 0o777 == 0o644
    assert gateway.access_log.stat().st_mode & 0o777 == 0o600
    assert (gateway.htdocs / "index.html").exists()
    if os.geteuid() == 0:
        assert 'User "www-data"' in gateway.conf_path.read_text()  # Apache refuses root
    # Without the secrets, Apache warns of the undefined variables: they are needed at start.
    unset = server.config_test(gateway)
    assert CLIENT_SECRET_ENV in unset.stderr
