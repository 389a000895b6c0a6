"""The CI rule holds: with CI=true a skipped test fails, an xfail and a deselected test do not."""

import pytest

EXAMPLE = """
import pytest

def test_skipped():
    pytest.skip("dciodvfy not installed")

@pytest.mark.skipif(True, reason="R not installed")
def test_skipped_by_marker():
    pass

@pytest.mark.xfail(reason="known", strict=True)
def test_expected_failure():
    assert False

@pytest.mark.slow
def test_deselected():
    pass

def test_passes():
    pass
"""


@pytest.fixture
def example(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest('pytest_plugins = ["tests.no_silent_skip"]')
    pytester.makeini("[pytest]\nmarkers =\n    slow: slow\n")
    pytester.makepyfile(test_example=EXAMPLE)
    return pytester


def test_in_ci_a_skip_fails_with_its_reason(example, monkeypatch):
    monkeypatch.setenv("CI", "true")
    result = example.runpytest("-m", "not slow")
    # a skip in the call phase is a failure; a skip at set-up (skipif, a fixture) an error
    result.assert_outcomes(failed=1, errors=1, passed=1, xfailed=1, deselected=1)
    result.stdout.fnmatch_lines(
        ["*skipped in CI, where every test must run*dciodvfy not installed*"]
    )
    result.stdout.fnmatch_lines(["*skipped in CI, where every test must run*R not installed*"])


def test_outside_ci_a_skip_stays_a_skip(example, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    result = example.runpytest("-m", "not slow")
    result.assert_outcomes(skipped=2, passed=1, xfailed=1, deselected=1)
