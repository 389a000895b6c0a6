"""Rights request rules: field validation without echoing values, deadlines, state machine."""

from __future__ import annotations

import datetime as dt

import pytest

from hdh_assets.gdpr.rights import (
    InvalidRequest,
    RequestType,
    Status,
    TransitionRefused,
    add_months,
    check_transition,
    extended_deadline,
    initial_deadline,
    urgency,
    validate_submission,
)

NIR = "212023197298779"  # synthetic: born February 2012
GOOD = dict(
    request_type="erasure",
    family_name="Laurent-Dubois",
    given_names="Hélène Marie",
    birth_date="2012-02-06",
    nir="2 12 02 31 972 987 79",
    email="Helene@Example.fr",
)


def test_a_valid_submission_is_normalised():
    kind, identity = validate_submission(**GOOD)
    assert kind is RequestType.ERASURE
    assert identity.nir == NIR and identity.email == "helene@example.fr"
    assert identity.birth_date == dt.date(2012, 2, 6)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("request_type", "deletion", "choose objection"),
        ("family_name", "", "required"),
        ("family_name", "R2D2", "letters"),
        ("given_names", "x" * 101, "at most 100"),
        ("birth_date", "06/02/2012", "YYYY-MM-DD"),
        ("birth_date", "2012-03-06", "does not match the year and month"),
        ("nir", "212023197298778", "control key"),
        ("nir", "2120231972987", "15 characters"),
        ("email", "helene@", "valid e-mail"),
    ],
)
def test_each_wrong_field_gets_its_own_message_without_its_value(field, value, message):
    with pytest.raises(InvalidRequest) as error:
        validate_submission(**{**GOOD, field: value})
    reported = {"request_type": "type"}.get(field, field)
    assert message in error.value.errors[reported]
    if len(value) > 3:
        assert value not in str(error.value)


def test_deadlines_are_one_month_then_three_clamped_to_month_ends():
    received = dt.datetime(2027, 1, 31, 10, 0)
    assert initial_deadline(received) == dt.datetime(2027, 2, 28, 10, 0)
    assert extended_deadline(received) == dt.datetime(2027, 4, 30, 10, 0)
    assert add_months(dt.datetime(2027, 11, 15), 3) == dt.datetime(2028, 2, 15)


def test_urgency_flags_open_requests_only():
    deadline = dt.datetime(2027, 3, 10, tzinfo=dt.UTC)
    assert urgency(Status.VERIFIED, deadline, deadline - dt.timedelta(days=8)) is None
    assert urgency(Status.VERIFIED, deadline, deadline - dt.timedelta(days=6)) == "due_soon"
    assert urgency(Status.RECEIVED, deadline, deadline + dt.timedelta(hours=1)) == "overdue"
    assert urgency(Status.COMPLETED, deadline, deadline + dt.timedelta(days=30)) is None


def test_the_state_machine_refuses_shortcuts():
    check_transition(Status.RECEIVED, Status.VERIFIED)
    check_transition(Status.FAILED, Status.PROCESSING)
    for current, target in [
        (Status.RECEIVED, Status.PROCESSING),
        (Status.RECEIVED, Status.COMPLETED),
        (Status.REJECTED, Status.VERIFIED),
        (Status.COMPLETED, Status.PROCESSING),
    ]:
        with pytest.raises(TransitionRefused):
            check_transition(current, target)
