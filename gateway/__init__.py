"""The authenticating gateway: Apache httpd with mod_auth_openidc in front of the platform's web
applications (the Dagster UI first; the viewer or JupyterHub later), so that none of them has to
implement sign-in. ``config`` renders the Apache configuration from the single sign-on settings;
``server`` runs Apache with it as a child process.
"""
