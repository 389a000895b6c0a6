"""Single sign-on with any standard OpenID Connect provider (Keycloak, a national federation).

``settings`` reads the deployment's choices from the environment, ``oidc`` speaks the protocol
(discovery, PKCE, code exchange, token verification, logout), ``roles`` turns a user's groups
into the platform's roles and projects, and ``dev_provider`` runs a development provider for
the tests and ``make ui``. Nothing here names a vendor.
"""
