"""The README is the front door and the docs site holds the rest: keep both honest.

- ``README.md`` stays under 10 KB;
- every page under ``docs/`` is reachable from the README through relative Markdown links
  (directly or through pages it links to) and is listed in the ``nav`` of ``mkdocs.yml``;
- relative links of the README and the pages point at files that exist inside the repository;
- no tracker issue number and no path outside the repository appears in the README or the pages;
- ``mkdocs build --strict`` succeeds (any warning fails it).
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
MKDOCS_YML = ROOT / "mkdocs.yml"
README_LIMIT_BYTES = 10 * 1024

FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.M | re.S)
CODE_SPAN = re.compile(r"(`+)(?!`).*?(?<!`)\1(?!`)", re.S)
# [text](target) or [text](target "title"); images too (a leading "!" changes nothing here).
LINK = re.compile(r"\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_DEFINITION = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.M)
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")

ISSUE_PATTERNS = {
    "issue number (#N)": re.compile(r"(?<![&\w/#])#\d+\b"),
    "issue reference (issue N)": re.compile(
        r"\b(?:issues?|tickets?|pull requests?|PRs?|GH)[\s-]*(?:no\.?\s*|number\s*)?#?\d+\b",
        re.I,
    ),
}
OUTSIDE_PATHS = {
    "a path to a sibling checkout (../shared)": re.compile(r"\.\./shared\b"),
    "a path of this machine (/work/...)": re.compile(r"(?<![\w.])/work/"),
}


def doc_pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def without_code(text: str) -> str:
    """The Markdown outside fenced blocks and code spans: where links are links."""
    return CODE_SPAN.sub(" ", FENCE.sub(" ", text))


def link_targets(text: str) -> Iterator[str]:
    prose = without_code(text)
    yield from LINK.findall(prose)
    yield from REFERENCE_DEFINITION.findall(prose)


def local_target(source: Path, target: str) -> Path | None:
    """The file a relative link points at, or None for URLs and same-page anchors."""
    if SCHEME.match(target) or target.startswith(("#", "//")):
        return None
    path = unquote(target.split("#", 1)[0].split("?", 1)[0])
    if not path:
        return None
    if path.startswith("/"):
        raise AssertionError(f"{rel(source)}: absolute link {target!r}; make it relative")
    resolved = (source.parent / path).resolve()
    if resolved.is_dir():
        resolved = resolved / "index.md"
    return resolved


def reachable_from_readme() -> set[Path]:
    seen: set[Path] = set()
    queue = [README.resolve()]
    while queue:
        page = queue.pop()
        if page in seen or page.suffix != ".md" or not page.is_file():
            continue
        seen.add(page)
        for target in link_targets(page.read_text(encoding="utf-8")):
            resolved = local_target(page, target)
            if resolved is not None:
                queue.append(resolved)
    return seen


class _TolerantLoader(yaml.SafeLoader):
    """mkdocs.yml may carry ``!!python/name:`` or ``!ENV`` tags; the nav needs none of them."""


_TolerantLoader.add_multi_constructor("!", lambda loader, suffix, node: None)
_TolerantLoader.add_multi_constructor("tag:yaml.org,2002:python/", lambda loader, s, node: None)


def mkdocs_config() -> dict:
    return yaml.load(MKDOCS_YML.read_text(encoding="utf-8"), Loader=_TolerantLoader)


def nav_files(entry: object) -> Iterator[str]:
    if isinstance(entry, str):
        if not SCHEME.match(entry):
            yield entry
    elif isinstance(entry, list):
        for item in entry:
            yield from nav_files(item)
    elif isinstance(entry, dict):
        for value in entry.values():
            yield from nav_files(value)


def checked_files() -> list[Path]:
    return [README, *doc_pages()]


def test_readme_is_under_10_kb() -> None:
    size = README.stat().st_size
    assert size < README_LIMIT_BYTES, (
        f"README.md is {size} bytes; keep it under {README_LIMIT_BYTES} (10 KB) and move "
        "details into docs/"
    )


def test_docs_folder_has_pages() -> None:
    assert (DOCS / "index.md").is_file(), "docs/index.md is the site's home page"
    assert len(doc_pages()) > 1


def test_every_page_is_reachable_from_the_readme() -> None:
    reached = reachable_from_readme()
    unreachable = [rel(page) for page in doc_pages() if page.resolve() not in reached]
    assert unreachable == [], (
        "pages no chain of relative links from README.md reaches: link them from README.md or "
        f"from a page it reaches: {unreachable}"
    )


def test_every_page_is_in_the_mkdocs_nav() -> None:
    config = mkdocs_config()
    assert config.get("docs_dir", "docs") == "docs"
    listed = {(DOCS / name).resolve() for name in nav_files(config.get("nav") or [])}
    missing = [rel(page) for page in doc_pages() if page.resolve() not in listed]
    assert missing == [], f"pages missing from the nav of mkdocs.yml: {missing}"
    absent = sorted(rel(p) for p in listed if not p.is_file())
    assert absent == [], f"nav entries of mkdocs.yml without a page: {absent}"


def test_relative_links_point_at_files_of_the_repository() -> None:
    problems = []
    for source in checked_files():
        for target in link_targets(source.read_text(encoding="utf-8")):
            resolved = local_target(source, target)
            if resolved is None:
                continue
            if not resolved.is_relative_to(ROOT):
                problems.append(f"{rel(source)}: {target} leaves the repository")
            elif not resolved.exists():
                problems.append(f"{rel(source)}: {target} does not exist")
            elif source != README and not resolved.is_relative_to(DOCS):
                problems.append(
                    f"{rel(source)}: {target} is outside docs/ (mkdocs cannot link it); "
                    "write the path as code instead"
                )
    assert problems == []


@pytest.mark.parametrize("path", checked_files(), ids=rel)
def test_no_issue_numbers_or_outside_paths(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    # Link targets (anchors such as #2-setup) are not issue numbers; their text still counts.
    prose = re.sub(r"\]\([^)]*\)", "]", text)
    found = []
    for number, line in enumerate(prose.splitlines(), start=1):
        for what, pattern in ISSUE_PATTERNS.items():
            found += [f"line {number}: {what}: {m.group(0)!r}" for m in pattern.finditer(line)]
    for number, line in enumerate(text.splitlines(), start=1):
        for what, pattern in OUTSIDE_PATHS.items():
            found += [f"line {number}: {what}: {m.group(0)!r}" for m in pattern.finditer(line)]
    assert found == [], f"{rel(path)}: " + "; ".join(found)


def test_mkdocs_builds_strictly(tmp_path: Path) -> None:
    missing = [name for name in ("mkdocs", "material") if importlib.util.find_spec(name) is None]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not importable by {sys.executable}: the docs build is part of "
            "the suite; install the docs tools (pyproject's dev extras, make test), e.g. "
            "pip install 'mkdocs==1.6.1' 'mkdocs-material==9.*'",
            pytrace=False,
        )
    site = tmp_path / "site"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--config-file",
            str(MKDOCS_YML),
            "--site-dir",
            str(site),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{output}"
    warnings = [line for line in output.splitlines() if line.startswith("WARNING")]
    assert warnings == [], "\n".join(warnings)
    assert (site / "index.html").is_file()
    for page in doc_pages():
        built = page.relative_to(DOCS).with_suffix("")
        html = site / (built.parent if built.name == "index" else built) / "index.html"
        assert html.is_file(), f"{rel(page)} was not built ({html.relative_to(site)} missing)"
