"""Workspace provisioning's pure core at scale: load and check 200 project specs, render every
Kubernetes object, validate each strictly against the Kubernetes 1.37 schemas.

The baseline, measured in the same run, is ``kubernetes_validate.validate(obj, version,
strict=True)`` itself, which re-reads and re-parses the version's 1.8 MB schema definitions for
every object; our validator resolves the same schemas once per kind and reuses them. The baseline
runs on the objects of the first ``--baseline-projects`` projects (all of them would take minutes)
and its time for the full set is extrapolated from its per-object cost.

    .venv/bin/python benchmarks/workspaces_render.py [--projects 200] [--baseline-projects 10]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hdh_assets.workspaces.manifests import RenderSettings, render_projects, to_yaml
from hdh_assets.workspaces.specs import load_specs
from hdh_assets.workspaces.validation import validate_objects, validate_uncached
from tests.workspaces import write_projects

TARGET_SECONDS = 10.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--projects", type=int, default=200)
    parser.add_argument("--baseline-projects", type=int, default=10)
    args = parser.parse_args()
    settings = RenderSettings()
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_projects(Path(tmp), args.projects)

        t0 = time.perf_counter()
        specs = load_specs(folder)
        t1 = time.perf_counter()
        rendered = render_projects(specs, settings)
        documents = [to_yaml(objects) for objects in rendered.values()]
        t2 = time.perf_counter()
        errors = [
            e
            for objects in rendered.values()
            for e in validate_objects(objects, settings.kubernetes_version)
        ]
        t3 = time.perf_counter()

    assert len(specs) == args.projects and not errors, errors[:5]
    objects = [obj for project in rendered.values() for obj in project]
    sample = [obj for pid in list(rendered)[: args.baseline_projects] for obj in rendered[pid]]
    t4 = time.perf_counter()
    baseline_errors = [
        e for obj in sample if (e := validate_uncached(obj, settings.kubernetes_version))
    ]
    t5 = time.perf_counter()
    assert not baseline_errors, baseline_errors[:5]

    total = t3 - t0
    ours_per_object = (t3 - t2) / len(objects)
    theirs_per_object = (t5 - t4) / len(sample)
    baseline_total = (t1 - t0) + (t2 - t1) + theirs_per_object * len(objects)
    size = sum(len(d) for d in documents)
    print(
        f"projects            : {len(specs)} ({len(objects)} objects, {size / 1e6:.1f} MB of YAML)"
    )
    print(f"load + check specs  : {t1 - t0:.2f} s")
    print(f"render + YAML       : {t2 - t1:.2f} s")
    print(
        f"strict validation   : {t3 - t2:.2f} s ({ours_per_object * 1e3:.2f} ms/object, cached validators)"
    )
    print(
        f"total               : {total:.2f} s = {len(specs) / total:,.0f} specs/s (target: {TARGET_SECONDS:.0f} s)"
    )
    print(
        f"baseline validation : {theirs_per_object * 1e3:.1f} ms/object with kubernetes_validate.validate "
        f"({len(sample)} objects of {args.baseline_projects} projects)"
    )
    print(
        f"baseline total      : {baseline_total:.1f} s (extrapolated) = {len(specs) / baseline_total:,.1f} specs/s"
    )
    print(
        f"validation speed-up : {theirs_per_object / ours_per_object:.0f}x; end to end {baseline_total / total:.1f}x"
    )
    print("target met" if total < TARGET_SECONDS else "TARGET MISSED")


if __name__ == "__main__":
    main()
