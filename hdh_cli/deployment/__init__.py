"""The Kubernetes deployment of the platform, rendered from settings by pure functions.

``settings`` (what an operator chooses, from ``HDH_DEPLOY_*``), ``pods`` (what every pod
shares), ``helm`` (values for Dagster's chart and the ``dagster.yaml`` it makes), ``kubernetes``
(the objects the chart does not create), ``image`` (the Dockerfile) and ``render`` (the folder).
Nothing here talks to a cluster.
"""
