"""``hdh spark``: the Spark settings in force, and a standalone cluster on this machine to try
the cluster path (``HDH_SPARK_MASTER``) or Spark Connect (``HDH_SPARK_REMOTE``) against."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import click

from hdh_cli.console import console, platform_home, print_json


@click.group()
def spark() -> None:
    """Where the Spark assets run: local, a cluster or a Spark Connect server."""


@spark.command("settings")
@click.option("--json", "as_json", is_flag=True, help="Print mode and session settings as JSON.")
def spark_settings(as_json: bool) -> None:
    """The session the Spark assets get, from the HDH_SPARK_* variables."""
    from resources.spark import SparkSettings, SparkSettingsError

    try:
        settings = SparkSettings.from_env()
    except SparkSettingsError as error:
        raise click.ClickException(str(error)) from None
    if as_json:
        print_json({"mode": settings.mode, "config": settings.config()})
        return
    console.print(f"mode: [bold]{settings.mode}[/]")
    for key, value in settings.config().items():
        console.print(f"  {key} = {value}")


@spark.command("cluster")
@click.option("--workers", default=2, show_default=True, help="Worker daemons.")
@click.option("--cores", default=1, show_default=True, help="Cores each worker offers.")
@click.option("--memory", default="2g", show_default=True, help="Memory each worker offers.")
@click.option("--connect", is_flag=True, help="Also start a Spark Connect server on it.")
@click.option(
    "--work-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Logs and worker folders (default HDH_HOME/spark-cluster).",
)
def spark_cluster(workers: int, cores: int, memory: str, connect: bool, work_dir: Path | None):
    """A Spark standalone master and workers on loopback until Ctrl-C, from the installed pyspark.

    Run the Spark assets on it from another shell with the variable this prints."""
    from hdh_cli.spark_cluster import ClusterStartError, LocalSparkCluster

    folder = work_dir or platform_home().ensure().root / "spark-cluster"
    cluster = LocalSparkCluster(
        folder, workers=workers, cores_per_worker=cores, memory_per_worker=memory
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        cluster.start()
        console.print(f"master {cluster.master_url}: {len(cluster.alive_workers())} workers alive")
        console.print(f"  export HDH_SPARK_MASTER={cluster.master_url}")
        if connect:
            url = cluster.start_connect_server(
                **{"spark.cores.max": str(max(1, workers * cores // 2))}
            )
            console.print(f"Spark Connect {url}")
            console.print(f"  export HDH_SPARK_REMOTE={url}   (instead of HDH_SPARK_MASTER)")
        console.print(f"logs in {folder / 'logs'}; Ctrl-C stops the cluster")
        stop.wait()
    except ClusterStartError as error:
        raise click.ClickException(str(error)) from None
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()
