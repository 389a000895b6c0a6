"""A user's groups, as the provider asserts them, turned into platform roles and projects (pure).

The provider is the one place where people are given roles: a group per role (``dpo``,
``data-referent``, ``operator`` by default) and a group per project membership
(``project:<id>:member``). The applications never keep their own role tables.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from auth.settings import PROJECT_PLACEHOLDER, OidcSettings

DPO = "dpo"
DATA_REFERENT = "data-referent"
OPERATOR = "operator"
ROLES = (DPO, DATA_REFERENT, OPERATOR)

# The workspace specs' project ids: DNS labels of at most 48 characters.
PROJECT_ID = re.compile(r"^[a-z0-9]([-a-z0-9]{0,46}[a-z0-9])?$")


class GroupsClaimError(ValueError):
    """The groups claim is present but not a list of strings: the provider is misconfigured."""


@dataclass(frozen=True)
class Access:
    """What a signed-in user may do: platform roles and the projects they belong to."""

    roles: frozenset[str]
    projects: frozenset[str]

    def has_role(self, role: str) -> bool:
        return role in self.roles

    def member_of(self, project: str) -> bool:
        return project in self.projects


def groups_from_claims(claims: Mapping[str, Any], claim: str = "groups") -> tuple[str, ...]:
    """The groups of verified token claims; none when the claim is absent.

    A leading ``/`` is dropped, so that providers that send full group paths (``/dpo``) and those
    that send names (``dpo``) configure the same group names.
    """
    value = claims.get(claim)
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise GroupsClaimError(f"the {claim!r} claim must be a list of strings")
    if not all(isinstance(group, str) for group in value):
        raise GroupsClaimError(f"the {claim!r} claim must be a list of strings")
    return tuple(group[1:] if group.startswith("/") else group for group in value)


def roles_for(groups: Iterable[str], settings: OidcSettings) -> frozenset[str]:
    """Platform roles of someone in ``groups``; unknown groups grant nothing."""
    by_group = {
        settings.dpo_group: DPO,
        settings.referent_group: DATA_REFERENT,
        settings.operator_group: OPERATOR,
    }
    return frozenset(by_group[group] for group in groups if group in by_group)


def projects_for(groups: Iterable[str], settings: OidcSettings) -> frozenset[str]:
    """Projects of someone in ``groups``; a group that names no valid project id grants none."""
    prefix, suffix = settings.project_group.split(PROJECT_PLACEHOLDER)
    projects = set()
    for group in groups:
        if len(group) <= len(prefix) + len(suffix):
            continue
        if group.startswith(prefix) and group.endswith(suffix):
            project = group[len(prefix) : len(group) - len(suffix)]
            if PROJECT_ID.match(project):
                projects.add(project)
    return frozenset(projects)


def access_for(claims: Mapping[str, Any], settings: OidcSettings) -> Access:
    """Roles and projects from verified ID or access token claims."""
    groups = groups_from_claims(claims, settings.groups_claim)
    return Access(roles_for(groups, settings), projects_for(groups, settings))
