"""The referents' decision log: refusals, newest wins, the hash chain, concurrent writers; and
the service's decide / requests_touched_by over a store populated without any vetting run."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
from dataclasses import asdict
from pathlib import Path

import pytest

from package_manager import service
from package_manager.decisions import GENESIS, DecisionError, DecisionLog
from resources.home import HdhHome
from tests.packages.test_approval import OTHER, request, resolved, save, sha


def _record(log: DecisionLog, decision: str = "approve", **overrides):
    arguments = {
        "ecosystem": "pypi",
        "name": "hdh-unknown-licence",
        "version": "1.0.0",
        "sha256": sha("hdh-unknown-licence"),
        "decision": decision,
        "reason": "licence confirmed by the authors in writing",
        "decided_by": "referent",
    }
    return log.record(**(arguments | overrides))


@pytest.fixture
def log(tmp_path: Path) -> DecisionLog:
    return DecisionLog(tmp_path / "packages" / "decisions.jsonl")


# --- recording --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"reason": ""}, r"a decision on hdh-unknown-licence 1\.0\.0 needs a reason"),
        ({"reason": "  \n\t"}, r"needs a reason \(it is audited\)"),
        ({"decided_by": " "}, r"needs the referent who takes it"),
        ({"decision": "maybe"}, r"decision 'maybe' is neither approve nor refuse"),
        ({"decision": "approved"}, r"decision 'approved' is neither"),
    ],
)
def test_a_decision_without_reason_referent_or_verdict_is_refused(
    log: DecisionLog, overrides: dict, message: str
) -> None:
    with pytest.raises(DecisionError, match=message):
        _record(log, **overrides)
    assert not log.path.exists()  # nothing written, not even an empty log
    assert log.entries() == [] and log.verify_chain() == []


def test_a_decision_is_recorded_canonical_trimmed_and_chained(log: DecisionLog) -> None:
    first = _record(log, name="HDH_Unknown.Licence", reason="  confirmed  ", decided_by=" ref ")
    assert (first.name, first.reason, first.decided_by) == (
        "hdh-unknown-licence",
        "confirmed",
        "ref",
    )
    assert first.previous == GENESIS
    assert first.decided_at.endswith("Z")
    second = _record(log, "refuse")
    lines = log.path.read_text().splitlines()
    assert len(lines) == 2
    assert json.loads(lines[0]) == asdict(first)
    assert second.previous == hashlib.sha256(lines[0].encode()).hexdigest()
    assert log.entries() == [first, second]
    assert log.verify_chain() == []


def test_cran_names_keep_their_case(log: DecisionLog) -> None:
    entry = _record(log, ecosystem="cran", name="Matrix", version="1.6-5")
    assert entry.name == "Matrix"
    assert entry.package_key == ("cran", "Matrix", "1.6-5", sha("hdh-unknown-licence"))


def test_the_newest_decision_on_a_file_wins(log: DecisionLog) -> None:
    digest, rebuilt = sha("file"), sha("rebuilt file")
    _record(log, "approve", sha256=digest)
    _record(log, "approve", sha256=rebuilt)
    _record(log, "refuse", sha256=digest, reason="a second look: the licence is not open")
    latest = log.latest()
    assert latest[("pypi", "hdh-unknown-licence", "1.0.0", digest)].decision == "refuse"
    assert latest[("pypi", "hdh-unknown-licence", "1.0.0", rebuilt)].decision == "approve"
    assert len(latest) == 2
    _record(log, "approve", sha256=digest, reason="the authors relicensed under MIT")
    assert log.latest()[("pypi", "hdh-unknown-licence", "1.0.0", digest)].reason == (
        "the authors relicensed under MIT"
    )


def test_no_log_means_no_decision(log: DecisionLog) -> None:
    assert log.entries() == [] and log.latest() == {} and log.verify_chain() == []


# --- the chain --------------------------------------------------------------------------------


def _five(log: DecisionLog) -> list[str]:
    for number in range(5):
        _record(log, "approve" if number % 2 else "refuse", version=f"1.0.{number}")
    return log.path.read_text().splitlines()


def test_an_edited_line_breaks_the_chain_at_the_next_line(log: DecisionLog) -> None:
    lines = _five(log)
    assert log.verify_chain() == []
    edited = json.loads(lines[1])
    edited["decision"] = "approve" if edited["decision"] == "refuse" else "refuse"
    lines[1] = json.dumps(edited, sort_keys=True)
    log.path.write_text("\n".join(lines) + "\n")
    assert log.verify_chain() == [f"{log.path}: line 3 does not follow line 2"]


def test_an_edited_reason_or_referent_is_detected_too(log: DecisionLog) -> None:
    lines = _five(log)
    edited = json.loads(lines[0])
    edited["decided_by"] = "someone-else"
    lines[0] = json.dumps(edited, sort_keys=True)
    log.path.write_text("\n".join(lines) + "\n")
    assert log.verify_chain() == [f"{log.path}: line 2 does not follow line 1"]


@pytest.mark.parametrize(("removed", "broken"), [(0, 1), (2, 3)])
def test_a_removed_line_is_detected(log: DecisionLog, removed: int, broken: int) -> None:
    lines = _five(log)
    del lines[removed]
    log.path.write_text("\n".join(lines) + "\n")
    problems = log.verify_chain()
    assert problems == [f"{log.path}: line {broken} does not follow line {broken - 1}"]


def test_reordered_lines_are_detected(log: DecisionLog) -> None:
    lines = _five(log)
    lines[1], lines[2] = lines[2], lines[1]
    log.path.write_text("\n".join(lines) + "\n")
    assert len(log.verify_chain()) == 3  # lines 2, 3 and 4 no longer follow


def test_a_decision_after_a_break_does_not_hide_it(log: DecisionLog) -> None:
    lines = _five(log)
    del lines[1]
    log.path.write_text("\n".join(lines) + "\n")
    _record(log, "approve", version="2.0.0")
    assert log.verify_chain() == [f"{log.path}: line 2 does not follow line 1"]


def test_a_line_edited_into_something_unreadable_is_never_accepted(log: DecisionLog) -> None:
    """Not reported as a chain break but refused outright (ValueError): the portal's audit
    trail catches it and shows the log as unreadable."""
    lines = _five(log)
    lines[1] = lines[1][: len(lines[1]) // 2]  # cut in the middle
    log.path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError):
        log.verify_chain()
    with pytest.raises(ValueError):
        log.latest()


def _write_decisions(path: str, writer: int, count: int) -> None:
    log = DecisionLog(Path(path))
    for number in range(count):
        log.record(
            ecosystem="pypi",
            name=f"hdh-writer-{writer}",
            version=f"1.0.{number}",
            sha256=sha(f"{writer}/{number}"),
            decision="approve",
            reason=f"writer {writer}, decision {number}",
            decided_by=f"referent-{writer}",
        )


def test_concurrent_writers_keep_the_chain_whole(log: DecisionLog) -> None:
    """The portal and the CLI append at once: the lock keeps one line per decision, chained."""
    writers, each = 4, 25
    context = multiprocessing.get_context("fork")
    processes = [
        context.Process(target=_write_decisions, args=(str(log.path), w, each))
        for w in range(writers)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=60)
    assert [p.exitcode for p in processes] == [0] * writers
    entries = log.entries()
    assert len(entries) == writers * each
    assert log.verify_chain() == []
    assert {(e.name, e.version) for e in entries} == {
        (f"hdh-writer-{w}", f"1.0.{n}") for w in range(writers) for n in range(each)
    }
    # each writer's own decisions stay in its order
    for w in range(writers):
        mine = [e.version for e in entries if e.decided_by == f"referent-{w}"]
        assert mine == [f"1.0.{n}" for n in range(each)]


# --- service.decide and requests_touched_by ---------------------------------------------------


@pytest.fixture
def populated(hdh_home: HdhHome) -> dict:
    """Three vetted requests: two share a waiting file, a third holds a rebuilt copy of it."""
    store = service.package_store(hdh_home)
    waiting = resolved("hdh-unknown-licence", requested=True)
    rebuilt = resolved("hdh-unknown-licence", digest=sha("rebuilt"), requested=True)
    core = resolved("hdh-core")
    a, b, c = (
        request("hdh-unknown-licence"),
        request("hdh-tabular"),
        request("hdh-unknown-licence", OTHER),
    )
    save(store, a, [(waiting, "needs_review"), (core, "passed")])
    save(store, b, [(resolved("hdh-tabular"), "passed"), (waiting, "needs_review")])
    save(store, c, [(rebuilt, "needs_review")])
    unrelated = request("hdh-plot")
    save(store, unrelated, [(resolved("hdh-plot"), "passed"), (core, "passed")])
    return {
        "home": hdh_home,
        "store": store,
        "ids": (a.request_id, b.request_id, c.request_id, unrelated.request_id),
        "waiting": waiting,
        "rebuilt": rebuilt,
    }


def test_decide_records_one_decision_per_vetted_file(populated: dict) -> None:
    home, (a, b, c, _) = populated["home"], populated["ids"]
    decided = service.decide(
        home,
        ecosystem="pypi",
        name="HDH_Unknown_Licence",
        version="1.0.0",
        decision="approve",
        reason="licence confirmed",
        decided_by="referent",
    )
    assert sorted(d.sha256 for d in decided) == sorted(
        {populated["waiting"].sha256, populated["rebuilt"].sha256}
    )
    assert {d.name for d in decided} == {"hdh-unknown-licence"}
    assert service.requests_touched_by(home, decided) == {a, b, c}
    assert populated["store"].decisions.verify_chain() == []


def test_decide_on_the_file_the_referent_saw_touches_its_requests_only(populated: dict) -> None:
    home, rebuilt_only = populated["home"], populated["ids"][2]
    decided = service.decide(
        home,
        ecosystem="pypi",
        name="hdh-unknown-licence",
        version="1.0.0",
        decision="refuse",
        reason="not open",
        decided_by="referent",
        sha256=populated["rebuilt"].sha256,
    )
    assert [d.sha256 for d in decided] == [populated["rebuilt"].sha256]
    assert service.requests_touched_by(home, decided) == {rebuilt_only}
    assert service.requests_touched_by(home, []) == set()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"name": "hdh-never-requested"}, r"no vetted pypi package hdh-never-requested 1\.0\.0"),
        ({"version": "9.9.9"}, r"no vetted pypi package hdh-unknown-licence 9\.9\.9"),
        ({"ecosystem": "cran"}, r"no vetted cran package"),
        ({"sha256": "0" * 64}, r"with sha256 0{64}: nothing to decide on"),
    ],
)
def test_decide_on_nothing_vetted_fails_and_records_nothing(
    populated: dict, arguments: dict, message: str
) -> None:
    base = {
        "ecosystem": "pypi",
        "name": "hdh-unknown-licence",
        "version": "1.0.0",
        "decision": "approve",
        "reason": "licence confirmed",
        "decided_by": "referent",
    }
    with pytest.raises(LookupError, match=message):
        service.decide(populated["home"], **(base | arguments))
    assert populated["store"].decisions.entries() == []


def test_decide_without_a_reason_records_nothing(populated: dict) -> None:
    with pytest.raises(DecisionError, match="needs a reason"):
        service.decide(
            populated["home"],
            ecosystem="pypi",
            name="hdh-unknown-licence",
            version="1.0.0",
            decision="approve",
            reason=" ",
            decided_by="referent",
        )
    assert populated["store"].decisions.entries() == []
