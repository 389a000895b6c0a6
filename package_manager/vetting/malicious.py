"""Malicious-code signals in the downloaded archive, before anything of it is installed.

PyPI archives go through guarddog's source rules (offline, in guarddog's kernel sandbox); findings
the policy rates high risk send the package to review with rule, file, line and message. guarddog
has no CRAN ecosystem, so R source archives get the platform's own small heuristic: code run at
install or load time that both fetches something from the network and executes it.

Batches: guarddog's folder scan would be one process for many archives, but its rules stop after
``max_hits`` findings and drop findings whose code equals an earlier one *per scan*, so a second
package in the same folder can lose its findings. The batch form here therefore runs one process
(one sandbox, one start-up) that scans each archive separately with guarddog's own scanner.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections import Counter
from dataclasses import dataclass
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import Any

from package_manager.model import CheckResult, ResolvedPackage
from package_manager.vetting.policy import Policy

CHECK = "malicious_code"
GUARDDOG_TIMEOUT = 900
_RESULTS_MARKER = "HDH-GUARDDOG-RESULTS "
_REPO_ROOT = Path(__file__).resolve().parents[2]


class ScanError(RuntimeError):
    """guarddog could not scan the archive."""


def guarddog_version() -> str:
    return installed_version("guarddog")


def guarddog_command(archive: Path) -> list[str]:
    """guarddog 3.2's local archive scan; it requires its kernel sandbox unless told otherwise."""
    executable = Path(sys.executable).with_name("guarddog")
    return [str(executable), "pypi", "scan", str(archive), "--output-format", "json"]


def _last_json(stdout: str) -> dict[str, Any]:
    for line in reversed(stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError("no JSON report in guarddog's output")


def scan_archive(archive: Path) -> dict[str, Any]:
    """One guarddog CLI run on one archive: its JSON report, or ScanError."""
    try:
        done = subprocess.run(
            guarddog_command(archive), capture_output=True, text=True, timeout=GUARDDOG_TIMEOUT
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ScanError(f"guarddog could not run: {exc}") from exc
    try:
        report = _last_json(done.stdout)
    except ValueError as exc:
        tail = (done.stderr or done.stdout or "no output").strip().splitlines()[-1:]
        raise ScanError(
            f"guarddog failed (exit {done.returncode}): {' '.join(tail)[:500]}"
        ) from exc
    if done.returncode != 0:
        raise ScanError(f"guarddog failed (exit {done.returncode}): {report}")
    return report


def scan_archives(archives: list[Path]) -> dict[Path, dict[str, Any]]:
    """Many archives in one sandboxed process, each scanned on its own; errors per archive."""
    if not archives:
        return {}
    command = [sys.executable, "-m", "package_manager.vetting.malicious", *map(str, archives)]
    env = os.environ | {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(_REPO_ROOT), os.environ.get("PYTHONPATH")]))
    }
    timeout = GUARDDOG_TIMEOUT + 30 * len(archives)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {a: {"error": f"guarddog could not run: {exc}"} for a in archives}
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith(_RESULTS_MARKER)]
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout or "no output").strip().splitlines()[-1:]
        error = f"guarddog batch failed (exit {done.returncode}): {' '.join(tail)[:500]}"
        return {a: {"error": error} for a in archives}
    by_path = json.loads(lines[-1].removeprefix(_RESULTS_MARKER))
    return {a: by_path.get(str(a), {"error": "missing from the batch report"}) for a in archives}


def _batch_main(archives: list[str]) -> int:
    """The batch scanner's process: guarddog's local-archive scan, once per archive, one sandbox."""
    from guarddog.ecosystems import ECOSYSTEM
    from guarddog.sandbox import apply_sandbox, is_available
    from guarddog.scanners import get_package_scanner
    from guarddog.utils.archives import safe_extract

    if not is_available():
        print("guarddog's kernel sandbox is not available on this machine", file=sys.stderr)
        return 2
    scanner = get_package_scanner(ECOSYSTEM.PYPI)
    assert scanner is not None
    tmp_root = os.path.realpath(tempfile.gettempdir())
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(dir=tmp_root) as tempdir:
        copies = []
        for index, archive in enumerate(archives):
            folder = os.path.join(tempdir, str(index))
            os.makedirs(folder)
            copies.append(os.path.join(folder, os.path.basename(archive)))
            shutil.copyfile(os.path.realpath(archive), copies[-1])
        os.chdir(tmp_root)  # as guarddog's CLI: extraction reads the working directory
        apply_sandbox(scan_paths=[], writable_paths=[tempdir])
        for archive, copy in zip(archives, copies, strict=True):
            extract_dir = os.path.join(os.path.dirname(copy), "_extracted")
            os.makedirs(extract_dir)
            try:
                safe_extract(copy, extract_dir)
                results[archive] = {"package": archive} | scanner.scan_local(extract_dir, None)
            except Exception as exc:  # one bad archive must not hide the others' results
                results[archive] = {"error": f"{type(exc).__name__}: {exc}"}
    sys.stdout.write(_RESULTS_MARKER + json.dumps(results, default=str) + "\n")
    return 0


def _split_location(location: str) -> tuple[str, int | None]:
    file, _, line = location.rpartition(":")
    return (file, int(line)) if file and line.isdigit() else (location, None)


def judge_guarddog(report: dict[str, Any], policy: Policy) -> CheckResult:
    """High-risk findings (by guarddog's risk severity or a rule the policy names) -> review."""
    scanner = f"guarddog {guarddog_version()}"
    if "error" in report:
        return CheckResult(
            CHECK, "not_run", (f"guarddog failed: {report['error']}",), {"scanner": scanner}
        )
    ignored = set(policy.guarddog_ignored_rules)
    findings: list[dict[str, Any]] = []
    for risk in report.get("risks") or []:
        rule = risk.get("threat_rule") or risk.get("name")
        if rule in ignored or risk.get("severity") not in policy.guarddog_high_risk_severities:
            continue
        file, line = _split_location(str(risk.get("threat_location", "")))
        findings.append(
            {
                "rule": rule,
                "file": file,
                "line": line,
                "message": risk.get("threat_description", ""),
                "severity": risk.get("severity"),
                "code": str(risk.get("threat_code", ""))[:400],
            }
        )
    results = report.get("results") or {}
    for rule in policy.guarddog_always_review_rules:
        if rule in ignored:
            continue
        for hit in results.get(rule) or []:
            file, line = _split_location(str(hit.get("location", "")))
            if not any(
                f["rule"] == rule and f["file"] == file and f["line"] == line for f in findings
            ):
                findings.append(
                    {
                        "rule": rule,
                        "file": file,
                        "line": line,
                        "message": hit.get("message", ""),
                        "severity": "policy",
                        "code": str(hit.get("code", ""))[:400],
                    }
                )
    other = Counter(
        {rule: len(hits) for rule, hits in results.items() if hits and isinstance(hits, list)}
    )
    evidence = {
        "scanner": scanner,
        "findings": findings,
        "risk_score": report.get("risk_score"),
        "all_findings_by_rule": dict(other),
    }
    errors = report.get("errors") or {}
    if findings:
        rules = ", ".join(sorted({f["rule"] for f in findings}))
        return CheckResult(
            CHECK,
            "needs_review",
            (f"guarddog rates findings high risk: {rules}",),
            evidence | {"errors": errors},
        )
    if errors:
        return CheckResult(
            CHECK,
            "not_run",
            (f"guarddog rules failed: {', '.join(errors)}",),
            evidence | {"errors": errors},
        )
    return CheckResult(
        CHECK, "passed", ("guarddog found nothing the policy rates high risk",), evidence
    )


# ---- R source archives: the platform's heuristic -------------------------------------------------

R_SCANNER = "platform R heuristic (download-and-execute at load or install time; not guarddog)"
_R_DOWNLOAD = re.compile(
    r"download\.file\s*\(|\burl\s*\(|readLines\s*\(\s*[\"']https?://|\bcurl::|\bhttr2?::|RCurl::"
    r"|getURL\s*\(|socketConnection\s*\(|[\"']https?://[^\"']+[\"']"
)
_R_EXECUTE = re.compile(
    r"\bsource\s*\(|\bsys\.source\s*\(|eval\s*\(\s*parse\s*\(|\bsystem2?\s*\(|\bshell\s*\(|Rscript\b"
)
_R_DIRECT = re.compile(r"\bsource\s*\(\s*(?:url\s*\(|[\"']https?://)")
_R_ONE_LINER = re.compile(r"function\s*\([^)]*\)\s*[^\s{]")
_R_HOOK = re.compile(
    r"^\s*[`\"']?(\.onLoad|\.onAttach|\.First\.lib)[`\"']?\s*(?:<-|=)\s*function\b"
)


@dataclass(frozen=True)
class RHit:
    file: str
    line: int
    kind: str  # "download", "execute" or "download-and-execute"
    where: str  # ".onLoad", ".onAttach" or "top level (runs at install)"
    code: str


def _strip_r_comment(line: str) -> str:
    out, quote = [], ""
    for ch in line:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            break
        out.append(ch)
    return "".join(out)


def _brace_delta(code: str) -> int:
    """Opened minus closed braces, outside string literals."""
    delta, quote = 0, ""
    for ch in code:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch == "{":
            delta += 1
        elif ch == "}":
            delta -= 1
    return delta


def load_time_lines(source: str) -> list[tuple[int, str, str]]:
    """(line number, code, where) of lines run at load (hook bodies) or install (top level)."""
    lines: list[tuple[int, str, str]] = []
    depth, hook, opened = 0, "", False
    for number, raw in enumerate(source.splitlines(), 1):
        code = _strip_r_comment(raw)
        if hook and not opened and code.strip() and not code.lstrip().startswith("{"):
            hook = ""  # the hook's body was the expression on its own line
        match = _R_HOOK.match(code) if depth == 0 and not hook else None
        if match:
            hook, opened = match.group(1), False
        if hook:
            lines.append((number, code, hook))
        elif depth == 0:
            lines.append((number, code, "top level (runs at install)"))
        depth = max(depth + _brace_delta(code), 0)
        opened = opened or (bool(hook) and depth > 0)
        one_liner = match and depth == 0 and _R_ONE_LINER.search(code)
        if one_liner or (hook and opened and depth == 0):
            hook = ""
    return lines


def scan_r_sources(files: dict[str, str]) -> list[RHit]:
    """Download and execute patterns in code run at load/install; both must occur to count."""
    hits: list[RHit] = []
    for name, source in files.items():
        for number, code, where in load_time_lines(source):
            direct = _R_DIRECT.search(code)
            fetches, runs = direct or _R_DOWNLOAD.search(code), direct or _R_EXECUTE.search(code)
            if fetches or runs:
                kind = (
                    "download-and-execute"
                    if fetches and runs
                    else "download"
                    if fetches
                    else "execute"
                )
                hits.append(RHit(name, number, kind, where, code.strip()[:300]))
    kinds = {h.kind for h in hits}
    if "download-and-execute" in kinds or {"download", "execute"} <= kinds:
        return hits
    return []


def r_sources(archive: Path) -> dict[str, str]:
    """The R files of a source package (``pkg/R/*.R``), read without extracting to disk."""
    files: dict[str, str] = {}
    with tarfile.open(archive) as tf:
        for member in tf.getmembers():
            parts = member.name.split("/")
            if (
                member.isfile()
                and len(parts) == 3
                and parts[1] == "R"
                and parts[2].lower().endswith((".r", ".s"))
            ):
                data = tf.extractfile(member)
                if data is not None:
                    files[member.name] = data.read(2_000_000).decode("utf-8", "replace")
    return files


def check_r_archive(archive: Path) -> CheckResult:
    try:
        files = r_sources(archive)
    except (OSError, tarfile.TarError) as exc:
        return CheckResult(
            CHECK, "not_run", (f"cannot read the R archive: {exc}",), {"scanner": R_SCANNER}
        )
    hits = scan_r_sources(files)
    evidence: dict[str, Any] = {"scanner": R_SCANNER, "files_scanned": len(files)}
    if not hits:
        return CheckResult(
            CHECK, "passed", ("no download-and-execute code at load or install time",), evidence
        )
    evidence["findings"] = [
        {
            "rule": f"r-{h.kind}",
            "file": h.file,
            "line": h.line,
            "message": f"{h.kind} in {h.where}",
            "code": h.code,
        }
        for h in hits
    ]
    return CheckResult(
        CHECK,
        "needs_review",
        ("R code run at load or install time downloads and executes code (platform heuristic)",),
        evidence,
    )


def check_malicious_batch(
    items: list[tuple[ResolvedPackage, Path]], policy: Policy
) -> dict[tuple[str, str, str], CheckResult]:
    """guarddog once for all PyPI archives; the R heuristic per CRAN archive."""
    results: dict[tuple[str, str, str], CheckResult] = {}
    pypi = [(p, a) for p, a in items if p.ecosystem == "pypi"]
    reports = scan_archives([a for _, a in pypi])
    for package, archive in pypi:
        results[package.key] = judge_guarddog(reports[archive], policy)
    for package, archive in items:
        if package.ecosystem == "cran":
            results[package.key] = check_r_archive(archive)
    return results


def check_malicious(package: ResolvedPackage, archive: Path, policy: Policy) -> CheckResult:
    """One archive: the guarddog CLI itself for PyPI, the R heuristic for CRAN."""
    if package.ecosystem == "cran":
        return check_r_archive(archive)
    try:
        return judge_guarddog(scan_archive(archive), policy)
    except ScanError as exc:
        return CheckResult(
            CHECK, "not_run", (str(exc),), {"scanner": f"guarddog {guarddog_version()}"}
        )


if __name__ == "__main__":
    sys.exit(_batch_main(sys.argv[1:]))
