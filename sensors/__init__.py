"""Sensors: landing zones now; GDPR rights, package requests and workspace specs later."""
