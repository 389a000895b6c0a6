"""A selection that matches no asset is refused, named, with what the user likely meant."""

from click.testing import CliRunner

from hdh_cli.main import cli
from hdh_cli.runs import near_selection, no_match_message

NAMES = ["claims/events", "claims/landed_files", "imaging/dicom_instances", "products/hba1c"]
GROUPS = ["claims", "imaging", "products"]


def test_materialize_refuses_a_selection_that_matches_nothing(hdh_home):
    result = CliRunner().invoke(cli, ["materialize", 'key:"nope"', "--json"])
    assert result.exit_code == 1, result.output
    assert "the selection 'key:\"nope\"' matches no asset" in result.output
    assert "hdh status" in result.output
    assert "succeeded" not in result.output and "materialisation(s)" not in result.output
    assert result.stdout == ""  # no JSON outcome of a run that never was


def test_a_misspelt_key_is_answered_with_the_near_keys(hdh_home):
    result = CliRunner().invoke(cli, ["materialize", "key:claims/evnts"])
    assert result.exit_code == 1, result.output
    assert 'did you mean key:"claims/events"' in result.output


def test_near_selection_reads_keys_groups_and_bare_names():
    assert near_selection('key:"claims/evnts"', NAMES, GROUPS)[0] == 'key:"claims/events"'
    assert near_selection("group:imagng", NAMES, GROUPS) == ["group:imaging"]
    assert 'key:"products/hba1c"' in near_selection("key:hba1c", NAMES, GROUPS)
    assert near_selection("key:zzzz", NAMES, GROUPS) == []


def test_the_message_without_suggestions_still_points_to_status():
    message = no_match_message("key:zzzz", NAMES, GROUPS)
    assert (
        message
        == "the selection 'key:zzzz' matches no asset. `hdh status` lists every asset and its group."
    )


def test_an_unparsable_selection_is_one_line_not_a_stack(hdh_home):
    result = CliRunner().invoke(cli, ["materialize", 'key:"'])
    assert result.exit_code == 1, result.output
    assert "cannot be parsed" in result.output and "Traceback" not in result.output
