import pytest
from hypothesis import given
from hypothesis import strategies as st

from hdh_assets.pseudonymisation.identifiers import (
    InvalidNationalIdentifier,
    is_valid_nir,
    nir_key,
    normalise_nir,
)

# Published example of a NIR (French Wikipedia, "Numéro de sécurité sociale en France").
PUBLISHED_EXAMPLE = "2 69 05 49 588 157 80"

bodies = st.builds(
    lambda sex, year, month, dept, rest: f"{sex}{year:02d}{month:02d}{dept}{rest:06d}",
    st.sampled_from("12"),
    st.integers(0, 99),
    st.integers(1, 12),
    st.sampled_from(["01", "13", "2A", "2B", "75", "95", "99"]),
    st.integers(0, 999_999),
)


def test_published_example_is_valid_and_normalised():
    assert normalise_nir(PUBLISHED_EXAMPLE) == "269054958815780"
    assert nir_key("2690549588157") == "80"


def test_corsican_departments_count_as_19_and_18():
    body = "185052A123456"
    expected = 97 - int(body.replace("2A", "19")) % 97
    assert nir_key(body) == f"{expected:02d}"
    assert nir_key(body) != nir_key(body.replace("2A", "2B"))


@given(bodies)
def test_every_body_with_its_key_validates(body):
    assert is_valid_nir(body + nir_key(body))
    assert normalise_nir(body) == body + nir_key(body)


@given(bodies, st.integers(0, 96))
def test_any_other_key_is_refused(body, wrong):
    if f"{wrong:02d}" == nir_key(body):
        wrong = (wrong + 1) % 97
    with pytest.raises(InvalidNationalIdentifier):
        normalise_nir(body + f"{wrong:02d}")


@given(bodies, st.integers(0, 12), st.integers(1, 9))
def test_a_changed_digit_is_detected(body, position, delta):
    """97 is prime and larger than any single-digit change, so the key catches every one."""
    if not body[position].isdigit():
        return
    changed = body[:position] + str((int(body[position]) + delta) % 10) + body[position + 1 :]
    assert not is_valid_nir(changed + nir_key(body))


@pytest.mark.parametrize(
    "bad", ["", "12345", "3690549588157800", "ABCDEFGHIJKLM", "269054958815781"]
)
def test_errors_never_quote_the_value(bad):
    with pytest.raises(InvalidNationalIdentifier) as error:
        normalise_nir(bad)
    if bad:
        assert bad not in str(error.value)
