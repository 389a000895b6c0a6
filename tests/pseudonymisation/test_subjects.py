import datetime as dt

import pytest

from hdh_assets.pseudonymisation import InvalidNationalIdentifier, Pseudonymiser

KEY = bytes(range(32))
NIR = "269054958815780"


def test_pseudonym_is_stable_and_ignores_formatting():
    p = Pseudonymiser(KEY)
    assert p.subject_pseudonym(NIR) == p.subject_pseudonym("2 69 05 49 588 157 80")
    assert p.subject_pseudonym(NIR) == p.subject_pseudonym("2690549588157")  # key recomputed
    assert len(p.subject_pseudonym(NIR)) == 32
    assert NIR not in p.subject_pseudonym(NIR)


def test_pseudonym_depends_on_the_key():
    assert Pseudonymiser(KEY).subject_pseudonym(NIR) != Pseudonymiser(KEY[::-1]).subject_pseudonym(
        NIR
    )


def test_provider_scoped_pseudonyms_never_collide_with_national_ones():
    p = Pseudonymiser(KEY)
    local = p.provider_scoped_pseudonym("chu-bordeaux", NIR)
    assert local != p.subject_pseudonym(NIR)
    assert local != p.provider_scoped_pseudonym("hcl-lyon", NIR)


def test_date_offsets_are_per_subject_nonzero_and_bounded():
    p = Pseudonymiser(KEY, max_date_shift_days=30)
    offsets = [p.date_offset_days(f"{i:032x}") for i in range(2000)]
    assert all(o != 0 and -30 <= o <= 30 for o in offsets)
    assert len(set(offsets)) == 60  # every allowed value is used
    pseudonym = p.subject_pseudonym(NIR)
    day = dt.date(2024, 2, 29)
    assert (p.shift_date(day, pseudonym) - day).days == p.date_offset_days(pseudonym)


def test_short_keys_are_refused():
    with pytest.raises(ValueError, match="32 bytes"):
        Pseudonymiser(b"short")


def test_invalid_nir_error_does_not_leak_the_value():
    with pytest.raises(InvalidNationalIdentifier) as error:
        Pseudonymiser(KEY).subject_pseudonym("269054958815799")
    assert "269054958815799" not in str(error.value)
