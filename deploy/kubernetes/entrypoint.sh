#!/bin/sh
# Rendered by `hdh deploy kubernetes` (hdh_cli/deployment/image.py).
set -eu
if [ "${1:-}" != "executor" ]; then
  exec "$@"
fi
# Spark passes the executor's JVM options as SPARK_JAVA_OPT_0, SPARK_JAVA_OPT_1, ...
opts=$(env | grep '^SPARK_JAVA_OPT_' | sort -t_ -k4 -n | sed 's/^SPARK_JAVA_OPT_[0-9]*=//' \
  | tr '\n' ' ')
# shellcheck disable=SC2086
exec java -Xms"$SPARK_EXECUTOR_MEMORY" -Xmx"$SPARK_EXECUTOR_MEMORY" $opts \
  -cp "${SPARK_CONF_DIR:-/usr/local/lib/python3.11/site-packages/pyspark/conf}:/usr/local/lib/python3.11/site-packages/pyspark/jars/*" \
  org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend \
  --driver-url "$SPARK_DRIVER_URL" \
  --executor-id "$SPARK_EXECUTOR_ID" \
  --cores "$SPARK_EXECUTOR_CORES" \
  --app-id "$SPARK_APPLICATION_ID" \
  --hostname "$SPARK_EXECUTOR_POD_IP" \
  --resourceProfileId "$SPARK_RESOURCE_PROFILE_ID" \
  --podName "$SPARK_EXECUTOR_POD_NAME"
