"""The code location's image: one image for the code server, the webserver, the daemon, every
run pod and Spark (Connect server and executors), so a run executes the code it was planned with.

The Dockerfile installs this project (``pip install .``) on ``python:3.11-slim-bookworm``:
Debian 12 is the slim image's release that still packages Java 17, which pyspark 4 needs. Spark
starts an executor pod with the single argument ``executor`` and expects the image to turn it
into the executor's JVM; pip's pyspark ships no such entry point, so the image carries its own.
"""

from __future__ import annotations

from hdh_cli.deployment import pods
from hdh_cli.deployment.settings import DeploymentSettings

PROJECT = "hdh-platform"
BASE_IMAGE = "python:3.11-slim-bookworm"
SOURCE_DIR = "/opt/hdh/src"
ENTRYPOINT = "/usr/local/bin/hdh-entrypoint"
ENTRYPOINT_FILE = "entrypoint.sh"  # beside the Dockerfile in deploy/kubernetes/


def build_command(settings: DeploymentSettings) -> str:
    return f"docker build -f deploy/kubernetes/Dockerfile -t {settings.image} ."


def dockerfile(settings: DeploymentSettings) -> str:
    uid = pods.APP_UID
    server = [
        "dagster",
        "code-server",
        "start",
        "-h",
        "0.0.0.0",
        "-p",
        str(pods.CODE_SERVER_PORT),
        "-m",
        pods.CODE_LOCATION_MODULE,
    ]
    cmd = ", ".join(f'"{part}"' for part in server)
    return f"""\
# Rendered by `hdh deploy kubernetes` (hdh_cli/deployment/image.py): change the settings, not this
# file. Build from the repository root:
#   {build_command(settings)}
FROM {BASE_IMAGE}

LABEL org.opencontainers.image.title="{PROJECT}" \\
      org.opencontainers.image.version="{settings.image_tag}" \\
      org.opencontainers.image.ref.name="{settings.image}"

# Java 17 for Spark (driver in run pods, Connect server, executors); tini reaps the JVM's children.
RUN apt-get update \\
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless tini procps \\
 && rm -rf /var/lib/apt/lists/*

ENV PYTHONUNBUFFERED=1 \\
    PYTHONDONTWRITEBYTECODE=1 \\
    PIP_NO_CACHE_DIR=1 \\
    PIP_DISABLE_PIP_VERSION_CHECK=1 \\
    SPARK_HOME={pods.SPARK_HOME} \\
    HDH_HOME={pods.HOME_MOUNT} \\
    HDH_SQL_DIR={SOURCE_DIR}/dbt_like_sql \\
    HDH_WORKSPACE_SPECS={SOURCE_DIR}/workspaces/projects

WORKDIR {SOURCE_DIR}
COPY . {SOURCE_DIR}
# This project, with the pinned Dagster set, dagster-k8s, dagster-postgres and pyspark.
RUN pip install --no-cache-dir . \\
 && groupadd --gid {uid} hdh \\
 && useradd --uid {uid} --gid {uid} --create-home --shell /usr/sbin/nologin hdh \\
 && mkdir -p {pods.HOME_MOUNT} \\
 && chown {uid}:{uid} {pods.HOME_MOUNT}
COPY --chmod=0755 deploy/kubernetes/{ENTRYPOINT_FILE} {ENTRYPOINT}

USER {uid}:{uid}
EXPOSE {pods.CODE_SERVER_PORT}
ENTRYPOINT ["/usr/bin/tini", "--", "{ENTRYPOINT}"]
CMD [{cmd}]
"""


def entrypoint() -> str:
    """``executor``: the JVM of a Spark executor, from the environment Spark sets on its pod;
    anything else is run as given (the chart's and the run launcher's commands)."""
    return f"""\
#!/bin/sh
# Rendered by `hdh deploy kubernetes` (hdh_cli/deployment/image.py).
set -eu
if [ "${{1:-}}" != "executor" ]; then
  exec "$@"
fi
# Spark passes the executor's JVM options as SPARK_JAVA_OPT_0, SPARK_JAVA_OPT_1, ...
opts=$(env | grep '^SPARK_JAVA_OPT_' | sort -t_ -k4 -n | sed 's/^SPARK_JAVA_OPT_[0-9]*=//' \\
  | tr '\\n' ' ')
# shellcheck disable=SC2086
exec java -Xms"$SPARK_EXECUTOR_MEMORY" -Xmx"$SPARK_EXECUTOR_MEMORY" $opts \\
  -cp "${{SPARK_CONF_DIR:-{pods.SPARK_HOME}/conf}}:{pods.SPARK_HOME}/jars/*" \\
  org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend \\
  --driver-url "$SPARK_DRIVER_URL" \\
  --executor-id "$SPARK_EXECUTOR_ID" \\
  --cores "$SPARK_EXECUTOR_CORES" \\
  --app-id "$SPARK_APPLICATION_ID" \\
  --hostname "$SPARK_EXECUTOR_POD_IP" \\
  --resourceProfileId "$SPARK_RESOURCE_PROFILE_ID" \\
  --podName "$SPARK_EXECUTOR_POD_NAME"
"""


def dockerignore() -> str:
    """``Dockerfile.dockerignore``: BuildKit reads it for this Dockerfile; keeps the image free
    of local state (HDH_HOME, the virtual environment, caches)."""
    return "\n".join(
        [
            "# Rendered by `hdh deploy kubernetes` (hdh_cli/deployment/image.py).",
            ".git",
            ".venv",
            ".hdh",
            ".site",
            "**/__pycache__",
            "**/node_modules",
            "*.egg-info",
            ".pytest_cache",
            ".ruff_cache",
            "spark-warehouse",
            "",
        ]
    )
