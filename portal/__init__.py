"""The individuals' web portal: the GDPR rights form and the request status page."""
