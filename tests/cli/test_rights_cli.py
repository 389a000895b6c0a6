"""`hdh rights`: file a request as the form would, then the DPO's commands."""

from __future__ import annotations

import json

from click.testing import CliRunner

from hdh_cli.main import cli
from resources.pseudonymisation import PseudonymisationKeyResource

PERSON = [
    "--nir", "212023197298779",
    "--family-name", "Laurent",
    "--given-names", "Hélène",
    "--birth-date", "2012-02-06",
    "--email", "helene.laurent0@example.fr",
]  # fmt: skip


def _hdh(*args):
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    json_out = "--json" in args and result.exit_code == 0  # JSON on stdout, messages on stderr
    return result.exit_code, result.stdout if json_out else result.output


def test_submit_verify_extend_show(hdh_home):
    code, out = _hdh("rights", "submit", "--type", "erasure", *PERSON, "--json")
    assert code == 0, out
    receipt = json.loads(out)
    assert set(receipt) == {"id", "token"} and receipt["id"].startswith("HDH-")
    request_id = receipt["id"]
    code, out = _hdh("rights", "show", request_id, "--json")
    shown = json.loads(out)
    expected = PseudonymisationKeyResource().pseudonymiser().subject_pseudonym("212023197298779")
    assert shown["status"] == "received" and shown["subject_pseudonym"] == expected
    assert shown["report"] is None and "212023197298779" not in out and "Laurent" not in out
    code, out = _hdh("rights", "process", "--json")
    assert json.loads(out)["pending"] == []  # not verified yet
    assert _hdh("rights", "verify", request_id, "--by", "dpo@hdh.example")[0] == 0
    code, out = _hdh("rights", "process", "--json")
    assert json.loads(out)["pending"] == [request_id]
    code, out = _hdh("rights", "extend", request_id, "--reason", "records held by two hospitals")
    assert code == 0 and "new deadline" in out
    code, out = _hdh("rights", "extend", request_id, "--reason", "again")
    assert code != 0 and "extended already" in out
    code, out = _hdh("rights", "reject", "HDH-NOSUCHONE0", "--reason", "x")
    assert code != 0 and "no request HDH-NOSUCHONE0" in out
    code, out = _hdh("rights", "list", "--status", "verified", "--json")
    listed = json.loads(out)["requests"]
    assert [r["id"] for r in listed] == [request_id] and listed[0]["extended"] is True
    audit = json.loads(_hdh("rights", "show", request_id, "--json")[1])["audit"]
    assert [a["action"] for a in audit] == ["submitted", "verified", "extended"]
    assert audit[1]["actor"] == "dpo@hdh.example"


def test_an_invalid_request_names_each_field_and_never_its_value(hdh_home):
    wrong = [*PERSON]
    wrong[wrong.index("--nir") + 1] = "212023197298778"
    wrong[wrong.index("--birth-date") + 1] = "2012-07-06"
    code, out = _hdh("rights", "submit", "--type", "objection", *wrong)
    assert code != 0
    assert "nir: the control key does not match" in out
    assert "212023197298778" not in out
    assert not (hdh_home.rights / "registry.db").exists() or "HDH-" not in _hdh("rights", "list")[1]
