"""Policy files: the real ones load, and a bad one stops start-up naming file, field and why."""

import hashlib
from pathlib import Path

import pytest

from consent.policy import PolicyError, load_policies, load_policy
from tests.factories import POLICIES

VALID = """\
name = "site"
version = "1"

[purposes.analytics]
default = "denied"

[kinds]
pageview = ["analytics"]
"""

EXTRA_PURPOSES = """\
[purposes.ads]
default = "granted"
sale_or_share = true
[purposes.email]
default = "denied"

"""


def write(directory: Path, text: str, name: str = "site") -> Path:
    path = directory / f"{name}.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", ["ccpa", "gdpr-exempt", "gdpr-strict"])
def test_each_real_policy_loads_with_its_version_its_file_hash_and_its_notice(name: str) -> None:
    policy = load_policies(POLICIES)[name]
    path = POLICIES / f"{name}.toml"
    assert policy.name == name
    assert policy.version == "2025-07-07"
    assert policy.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert policy.notice_text == (POLICIES / "notices" / f"{name}.md").read_text()


@pytest.mark.parametrize(
    ("name", "jurisdiction"), [("ccpa", "us-ca"), ("gdpr-exempt", "eu"), ("gdpr-strict", "eu")]
)
def test_each_real_policy_declares_the_jurisdiction_it_is_written_for(
    name: str, jurisdiction: str
) -> None:
    assert "\njurisdiction = " in (POLICIES / f"{name}.toml").read_text()
    assert load_policies(POLICIES)[name].file.jurisdiction == jurisdiction


@pytest.mark.parametrize("name", ["ccpa", "gdpr-exempt", "gdpr-strict"])
def test_each_real_purpose_is_described_in_the_words_of_the_policys_notice(name: str) -> None:
    policy = load_policies(POLICIES)[name]
    for purpose in policy.file.purposes.values():
        assert purpose.description
        assert purpose.description in policy.notice_text


def test_the_real_policies_directory_holds_exactly_the_three_shipped_policies() -> None:
    assert sorted(load_policies(POLICIES)) == ["ccpa", "gdpr-exempt", "gdpr-strict"]


def test_gpc_denies_the_listed_purposes_and_every_sale_or_share_purpose(tmp_path: Path) -> None:
    text = in_analytics("sale_or_share = true").replace("[kinds]", EXTRA_PURPOSES + "[kinds]")
    policy = load_policy(write(tmp_path, text + '[signals]\ngpc = ["email"]\n'))
    assert policy.sale_or_share() == ["ads", "analytics"]
    assert policy.gpc_denies() == {"ads", "analytics", "email"}


def test_a_comment_changes_the_sha256_but_not_the_version(tmp_path: Path) -> None:
    before = load_policy(write(tmp_path, VALID))
    after = load_policy(write(tmp_path, "# reworded\n" + VALID))
    assert after.version == before.version
    assert after.sha256 != before.sha256


def test_a_minimal_policy_takes_the_documented_defaults(tmp_path: Path) -> None:
    policy = load_policy(write(tmp_path, VALID))
    analytics = policy.file.purposes["analytics"]
    assert (analytics.consent_ttl_days, analytics.retention_days) == (395, 395)
    assert analytics.sale_or_share is False
    assert analytics.description == ""  # files written before the field still load
    assert policy.file.reconsent_on_change is False
    assert policy.file.anonymous_counting is False
    assert policy.file.tcf is None
    assert policy.notice_text == ""
    assert policy.file.jurisdiction == "eu"  # files written before the field still load


def at_top(line: str) -> str:
    return line + "\n" + VALID


def in_analytics(line: str) -> str:
    return VALID.replace('default = "denied"\n', f'default = "denied"\n{line}\n')


def table(text: str) -> str:
    return VALID + "\n" + text + "\n"


BAD_POLICIES = [
    # field, why (a fragment of it), policy text
    pytest.param(
        "(top level)", "unknown field `colour`", at_top('colour = "blue"'), id="unknown top field"
    ),
    pytest.param(
        "purposes.analytics",
        "unknown field `colour`",
        in_analytics("colour = 1"),
        id="unknown purpose field",
    ),
    pytest.param(
        "purposes.analytics.default",
        "'maybe'",
        VALID.replace('"denied"', '"maybe"'),
        id="default maybe",
    ),
    pytest.param(
        "purposes.analytics.retention_days",
        "Expected `int`",
        in_analytics('retention_days = "1"'),
        id="retention not an int",
    ),
    pytest.param(
        "kinds.pageview",
        "unknown purpose 'ads'",
        VALID.replace('["analytics"]', '["analytics", "ads"]'),
        id="kind names unknown purpose",
    ),
    pytest.param(
        "signals.gpc",
        "unknown purpose 'ads'",
        table('[signals]\ngpc = ["ads"]'),
        id="gpc names unknown purpose",
    ),
    pytest.param(
        "signals.dnt",
        "unknown purpose 'ads'",
        table('[signals]\ndnt = ["ads"]'),
        id="dnt names unknown purpose",
    ),
    pytest.param(
        "tcf.purposes.analytics",
        "1..11",
        table("[tcf]\npurposes = { analytics = [1, 12] }"),
        id="tcf purpose 12",
    ),
    pytest.param(
        "tcf.purposes.analytics",
        "1..11",
        table("[tcf]\npurposes = { analytics = [] }"),
        id="tcf purpose list empty",
    ),
    pytest.param(
        "tcf.purposes",
        "unknown purpose 'ads'",
        table("[tcf]\npurposes = { ads = [1] }"),
        id="tcf maps unknown purpose",
    ),
    pytest.param(
        "jurisdictions.us-ca",
        "unknown purpose 'ads'",
        table('[jurisdictions]\nus-ca = { ads = "granted" }'),
        id="jurisdiction unknown purpose",
    ),
    pytest.param(
        "version",
        "must not be empty",
        VALID.replace('version = "1"', 'version = " "'),
        id="blank version",
    ),
    pytest.param(
        "jurisdiction",
        "lowercase",
        at_top('jurisdiction = "California"'),
        id="jurisdiction not a code",
    ),
    pytest.param(
        "jurisdiction", "Expected `str`", at_top("jurisdiction = 1"), id="jurisdiction number"
    ),
    pytest.param(
        "purposes",
        "at least one purpose",
        'name = "site"\nversion = "1"\npurposes = {}\n[kinds]\n',
        id="no purposes",
    ),
    pytest.param(
        "purposes.Analytics",
        "purpose names are",
        VALID.replace("analytics", "Analytics"),
        id="purpose name uppercase",
    ),
    pytest.param(
        "purposes.analytics.consent_ttl_days",
        "at least 1",
        in_analytics("consent_ttl_days = 0"),
        id="ttl zero",
    ),
    pytest.param(
        "kinds.Page", "kind names are", VALID.replace("pageview", "Page"), id="kind name uppercase"
    ),
    pytest.param(
        "kinds.pageview",
        "at least one purpose",
        VALID.replace('["analytics"]', "[]"),
        id="kind without purposes",
    ),
    pytest.param(
        "dsar.max_days", "at least 1", table("[dsar]\nmax_days = 0"), id="dsar max_days zero"
    ),
    pytest.param(
        "reports.min_subjects",
        "at least 1",
        table("[reports]\nmin_subjects = 0"),
        id="min_subjects zero",
    ),
    pytest.param(
        "anonymous_kinds",
        "needs anonymous_counting = true",
        table("[anonymous_kinds]\npageview = []"),
        id="anonymous kinds without anonymous counting",
    ),
    pytest.param(
        "anonymous_kinds.Click",
        "kind names are",
        at_top("anonymous_counting = true") + "\n[anonymous_kinds]\nClick = []\n",
        id="anonymous kind name uppercase",
    ),
    pytest.param(
        "anonymous_kinds.click",
        "'page' is not an attribution field",
        at_top("anonymous_counting = true") + '\n[anonymous_kinds]\nclick = ["page"]\n',
        id="anonymous kind keeping a field that is not attribution",
    ),
    pytest.param(
        "anonymous_kinds.click",
        "Expected `array`",
        at_top("anonymous_counting = true") + '\n[anonymous_kinds]\nclick = "campaign"\n',
        id="anonymous kind fields not a list",
    ),
    pytest.param(
        "reports.attribution_window_days",
        "from 1 to 366",
        table("[reports]\nattribution_window_days = 0"),
        id="attribution window zero",
    ),
    pytest.param(
        "notice", "not found", at_top('notice = "notices/site.md"'), id="notice file missing"
    ),
    pytest.param("(file)", "not valid TOML", at_top("name = "), id="invalid toml"),
    pytest.param(
        "jurisdictions.us-ca.analytics",
        "Invalid enum value 'maybe'",
        table('[jurisdictions]\nus-ca = { analytics = "maybe" }'),
        id="bad jurisdiction default",
    ),
    pytest.param(
        "tcf.purposes.analytics[0]",
        "Expected `int`",
        table('[tcf]\npurposes = { analytics = ["x"] }'),
        id="tcf purpose id not a number",
    ),
    pytest.param(
        "jurisdictions.US-CA",
        "lowercase",
        table('[jurisdictions]\nUS-CA = { analytics = "granted" }'),
        id="jurisdiction key not lowercase",
    ),
    pytest.param("tcf.vendor_id", "GVL vendor id", table("[tcf]\nvendor_id = -1"), id="vendor -1"),
    pytest.param(
        "require_signed_pixels",
        "not a kind name",
        at_top('require_signed_pixels = ["Open"]'),
        id="signed kind typo",
    ),
    pytest.param(
        "consent_proof_days", "at least 1", at_top("consent_proof_days = 0"), id="no proof"
    ),
    pytest.param(
        "dsar.export_ttl_days", "at least 1", table("[dsar]\nexport_ttl_days = 0"), id="ttl 0"
    ),
    pytest.param(
        "purposes.analytics.description",
        "must not be blank",
        in_analytics('description = "  "'),
        id="blank description",
    ),
    pytest.param(
        "purposes.analytics.description",
        "at most 500 characters",
        in_analytics(f'description = "{"x" * 501}"'),
        id="description too long",
    ),
]


@pytest.mark.parametrize(("field", "why", "text"), BAD_POLICIES)
def test_a_bad_policy_stops_start_up_naming_the_file_the_field_and_why(
    tmp_path: Path, field: str, why: str, text: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(PolicyError) as raised:
        load_policies(tmp_path)
    message = str(raised.value)
    assert message.startswith(f"{path}: {field}: "), message
    assert why in message


def test_a_policy_whose_name_is_not_its_file_name_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, VALID, name="other")
    with pytest.raises(PolicyError) as raised:
        load_policy(path)
    assert str(raised.value) == f"{path}: name: 'site' must match the file name 'other'"


def test_one_bad_policy_among_good_ones_stops_the_whole_directory(tmp_path: Path) -> None:
    write(tmp_path, VALID, name="site")
    bad = write(tmp_path, VALID.replace('"site"', '"zzz"').replace('"denied"', '"maybe"'), "zzz")
    with pytest.raises(PolicyError, match=str(bad)):
        load_policies(tmp_path)


def test_a_directory_without_policy_files_stops_start_up(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("not a policy")
    with pytest.raises(PolicyError) as raised:
        load_policies(tmp_path)
    assert str(raised.value) == f"{tmp_path}: no policy files (*.toml) found"
