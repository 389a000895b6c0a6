"""Which viewers ``hdh ui`` serves, and where: one for operators (every study) on the base port,
then one per provisioned project on the following ports, in the projects' alphabetical order.

Until single sign-on decides who is looking, a viewer's server holds one project's token, so
each project gets its own server (OHIF's bundle needs the root of its host and port, so they
cannot share one). ``hdh ui`` starts them and ``hdh demo`` names the same addresses.
"""

from __future__ import annotations

from pathlib import Path

from dicomweb.access import GRANTS, MANIFEST

DEFAULT_VIEWER_PORT = 3003


def provisioned_projects(workspaces: Path) -> list[str]:
    """Projects whose workspace holds a grants manifest, sorted."""
    if not workspaces.is_dir():
        return []
    return sorted(p.name for p in workspaces.iterdir() if (p / GRANTS / MANIFEST).is_file())


def project_ports(projects: list[str], base_port: int = DEFAULT_VIEWER_PORT) -> dict[str, int]:
    """Each project's viewer port: the ones after the operators' viewer on ``base_port``."""
    return {project: base_port + 1 + i for i, project in enumerate(sorted(projects))}
