"""The `pixelgate` command as a user runs it: a real process, real environment, real database."""

import base64
import contextlib
import io
import json
import os
import secrets
import stat
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
from litestar.testing import TestClient

from app import cli
from app.main import create_app
from tests.factories import POLICIES, SECRET, auth, settings_for


def pixelgate(
    *args: str, cwd: Path, database_url: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    environment = {
        "PATH": os.environ["PATH"],
        "PIXELGATE_POLICIES_DIR": str(POLICIES),
        "PIXELGATE_SECRET_KEY": base64.b64encode(SECRET).decode(),
        **env,
    }
    if database_url:
        environment["PIXELGATE_DATABASE_URL"] = database_url
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def pixelgate_here(
    *args: str, cwd: Path, database_url: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    """As `pixelgate` above, but in this process: the `main` the command calls, with the same
    environment, working directory and output. For the tables of cases, where a process for
    each (a second of imports) would be most of this file's time, and for the later steps of
    a story whose first step ran the real command. Start-up, migration and the terminal run
    the real command throughout."""
    environment = {
        "PATH": os.environ["PATH"],
        "PIXELGATE_POLICIES_DIR": str(POLICIES),
        "PIXELGATE_SECRET_KEY": base64.b64encode(SECRET).decode(),
        **env,
    }
    if database_url:
        environment["PIXELGATE_DATABASE_URL"] = database_url
    stdout, stderr = io.StringIO(), io.StringIO()
    with (
        mock.patch.dict(os.environ, environment, clear=True),
        contextlib.chdir(cwd),
        contextlib.redirect_stdout(stdout),
        contextlib.redirect_stderr(stderr),
    ):
        code = cli.main(list(args))
    return subprocess.CompletedProcess(args, code, stdout.getvalue(), stderr.getvalue())


def one_line_error(result: subprocess.CompletedProcess[str], code: int, needle: str) -> None:
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("pixelgate: ") and needle in lines[0], lines[0]


def test_sites_and_keys_round_trip(database_url: str, tmp_path: Path) -> None:
    created = pixelgate(
        "sites", "create", "cli-shop", "--policy", "ccpa", "--origin", "https://Shop.Example",
        "--jurisdiction", "us-ca", cwd=tmp_path, database_url=database_url,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    site = json.loads(created.stdout)
    assert site["slug"] == "cli-shop" and site["origins"] == ["https://shop.example"]
    listed = pixelgate_here("sites", "list", cwd=tmp_path, database_url=database_url)
    assert any(json.loads(line)["slug"] == "cli-shop" for line in listed.stdout.splitlines())

    made = pixelgate_here(
        "keys", "create", "cli-shop", "--scope", "read", cwd=tmp_path, database_url=database_url
    )
    key = json.loads(made.stdout)
    assert set(key) == {"id", "site", "scope", "key"} and key["scope"] == "read"

    settings = settings_for(database_url)
    with TestClient(create_app(settings)) as client:
        debug = "/v1/sites/cli-shop/debug"
        assert client.get(debug, headers=auth(key["key"])).status_code == 200
        revoked = pixelgate_here(
            "keys", "revoke", key["id"], cwd=tmp_path, database_url=database_url
        )
        assert revoked.returncode == 0, revoked.stderr
        assert client.get(debug, headers=auth(key["key"])).status_code == 401
    again = pixelgate_here("keys", "revoke", key["id"], cwd=tmp_path, database_url=database_url)
    one_line_error(again, 2, "no active key")


@pytest.mark.parametrize(
    ("policy", "flags", "jurisdiction"),
    [
        ("ccpa", (), "us-ca"),
        ("gdpr-strict", (), "eu"),
        ("ccpa", ("--jurisdiction", "eu"), "eu"),
    ],
    ids=["ccpa-default", "gdpr-default", "explicit-wins"],
)
def test_a_new_site_takes_its_policys_jurisdiction_unless_told_otherwise(
    database_url: str, tmp_path: Path, policy: str, flags: tuple[str, ...], jurisdiction: str
) -> None:
    slug = f"j-{policy}-{len(flags)}"
    created = pixelgate_here(
        "sites", "create", slug, "--policy", policy, *flags, cwd=tmp_path, database_url=database_url
    )
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["jurisdiction"] == jurisdiction
    listed = pixelgate_here("sites", "list", cwd=tmp_path, database_url=database_url)
    [site] = [s for s in map(json.loads, listed.stdout.splitlines()) if s["slug"] == slug]
    assert site["jurisdiction"] == jurisdiction


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("sites", "create", "Bad_Slug", "--policy", "ccpa"), "slug"),
        (("sites", "create", "fine", "--policy", "nope"), "unknown policy 'nope'"),
        (("sites", "create", "fine", "--policy", "ccpa", "--origin", "ftp://x"), "origin"),
        (("sites", "create", "fine", "--policy", "ccpa", "--jurisdiction", "Europe!"), "jurisd"),
        (("keys", "create", "no-such-site", "--scope", "admin"), "unknown site"),
        (("keys", "create", "x", "--scope", "root"), "invalid choice"),
        (("frobnicate",), "invalid choice"),
        ((), "required"),
    ],
)
def test_bad_usage_is_one_line_and_exit_code_2(
    database_url: str, tmp_path: Path, args: tuple[str, ...], needle: str
) -> None:
    one_line_error(pixelgate_here(*args, cwd=tmp_path, database_url=database_url), 2, needle)


def test_a_duplicate_site_is_refused_and_the_first_kept(database_url: str, tmp_path: Path) -> None:
    slug = f"twice-{secrets.token_hex(4)}"
    first = pixelgate_here(
        "sites", "create", slug, "--policy", "ccpa", "--origin", "https://first.example",
        cwd=tmp_path, database_url=database_url,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    second = pixelgate_here(
        "sites", "create", slug, "--policy", "gdpr-strict", "--origin", "https://second.example",
        "--jurisdiction", "eu", "--controller", "Second Ltd",
        cwd=tmp_path, database_url=database_url,
    )  # fmt: skip
    one_line_error(second, 2, "already exists")
    listed = pixelgate_here("sites", "list", cwd=tmp_path, database_url=database_url)
    [site] = [s for s in map(json.loads, listed.stdout.splitlines()) if s["slug"] == slug]
    assert site == json.loads(first.stdout)  # every field the first create gave it


CONTROLLER = {
    "controller": "Example Shop GmbH",
    "contact_email": "privacy@shop.example",
    "address": "Hauptstraße 1, 10115 Berlin, Germany",
    "phone": "+49 30 1234567",
    "homepage": "https://shop.example/",
}


def test_a_site_is_created_with_its_controller_and_updated_field_by_field(
    database_url: str, tmp_path: Path
) -> None:
    created = pixelgate_here(
        "sites", "create", "ctl-shop", "--policy", "gdpr-strict",
        "--controller", CONTROLLER["controller"], "--contact-email", CONTROLLER["contact_email"],
        cwd=tmp_path, database_url=database_url,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    site = json.loads(created.stdout)
    assert site["controller"] == "Example Shop GmbH"
    assert site["contact_email"] == "privacy@shop.example"
    assert site["address"] is None and site["phone"] is None and site["homepage"] is None

    updated = pixelgate_here(
        "sites", "update", "ctl-shop", "--address", CONTROLLER["address"],
        "--phone", CONTROLLER["phone"], "--homepage", CONTROLLER["homepage"],
        cwd=tmp_path, database_url=database_url,
    )  # fmt: skip
    assert updated.returncode == 0, updated.stderr
    assert {k: json.loads(updated.stdout)[k] for k in CONTROLLER} == CONTROLLER

    renamed = pixelgate_here(
        "sites", "update", "ctl-shop", "--controller", "  Example Shop AG ",
        cwd=tmp_path, database_url=database_url,
    )  # fmt: skip
    listed = pixelgate_here("sites", "list", cwd=tmp_path, database_url=database_url)
    [site] = [s for s in map(json.loads, listed.stdout.splitlines()) if s["slug"] == "ctl-shop"]
    assert site == json.loads(renamed.stdout)
    assert {k: site[k] for k in CONTROLLER} == {**CONTROLLER, "controller": "Example Shop AG"}


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (("--contact-email", "not an address"), "contact_email"),
        (("--contact-email", "privacy@localhost"), "contact_email"),
        (("--homepage", "ftp://shop.example/"), "homepage"),
        (("--homepage", "https://"), "homepage"),
        (("--controller", "x" * 201), "controller: at most 200"),
        (("--address", "line one\x01"), "address: control characters"),
        (("--phone", "   "), "phone: must be non-empty"),
        (("--phone", "1" * 51), "phone: at most 50"),
        ((), "nothing to update"),
    ],
)
def test_a_bad_controller_field_is_one_line_exit_2_and_changes_nothing(
    database_url: str, tmp_path: Path, flags: tuple[str, ...], needle: str
) -> None:
    slug = f"ctl-bad-{secrets.token_hex(4)}"
    created = pixelgate_here(
        "sites", "create", slug, "--policy", "ccpa", "--controller", "Kept Ltd",
        cwd=tmp_path, database_url=database_url,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    # With a good field beside the bad one: nothing of the command is written.
    update = ("sites", "update", slug, "--controller", "Changed Ltd", *flags) if flags else ()
    one_line_error(
        pixelgate_here(
            *(update or ("sites", "update", slug)), cwd=tmp_path, database_url=database_url
        ),
        2,
        needle,
    )
    refused = pixelgate_here(
        "sites", "create", f"{slug}-new", "--policy", "ccpa", *flags,
        cwd=tmp_path, database_url=database_url,
    )  # fmt: skip
    if flags:
        one_line_error(refused, 2, needle)
    listed = pixelgate_here("sites", "list", cwd=tmp_path, database_url=database_url)
    sites = {s["slug"]: s for s in map(json.loads, listed.stdout.splitlines())}
    assert sites[slug]["controller"] == "Kept Ltd"
    assert sites[slug]["phone"] is None and sites[slug]["address"] is None
    assert (f"{slug}-new" in sites) is not bool(flags)


def test_updating_an_unknown_site_is_refused(database_url: str, tmp_path: Path) -> None:
    result = pixelgate_here(
        "sites", "update", "no-such-site", "--controller", "X", cwd=tmp_path,
        database_url=database_url,
    )  # fmt: skip
    one_line_error(result, 2, "unknown site 'no-such-site'")


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"PIXELGATE_PORT": "eighty"}, "PIXELGATE_PORT"),
        ({"PIXELGATE_SECRET_KEY": "c2hvcnQ="}, "PIXELGATE_SECRET_KEY"),
        ({"PIXELGATE_JOBS": "sometimes"}, "PIXELGATE_JOBS"),
        ({"PIXELGATE_DATABASE_URL": "mysql://x"}, "PIXELGATE_DATABASE_URL"),
        ({"PIXELGATE_WORKERS": "2"}, "use PostgreSQL"),
    ],
)
def test_a_bad_setting_stops_start_up_with_one_line_naming_it(
    tmp_path: Path, env: dict[str, str], needle: str
) -> None:
    one_line_error(pixelgate("serve", cwd=tmp_path, **env), 2, needle)
    assert not (tmp_path / "data" / "pixelgate.db").exists()


def test_a_broken_policy_stops_start_up_naming_file_and_field(tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    (policies / "notices").mkdir(parents=True)
    (policies / "broken.toml").write_text(
        'name = "broken"\nversion = "1"\n[purposes.analytics]\ndefault = "maybe"\n'
        '[kinds]\npageview = ["analytics"]\n'
    )
    result = pixelgate("serve", cwd=tmp_path, PIXELGATE_POLICIES_DIR=str(policies))
    one_line_error(result, 2, "broken.toml: purposes.analytics.default")


def test_migrate_on_the_embedded_default_creates_the_database_and_a_private_secret(
    tmp_path: Path,
) -> None:
    result = pixelgate("migrate", cwd=tmp_path, PIXELGATE_SECRET_KEY="")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "data" / "pixelgate.db").is_file()
    secret = tmp_path / "data" / "secret.key"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert len(base64.b64decode(secret.read_text())) >= 32
    first = secret.read_text()
    pixelgate("sites", "list", cwd=tmp_path, PIXELGATE_SECRET_KEY="")
    assert secret.read_text() == first


def test_jobs_run_once_prints_counts_and_refuses_a_past_date(
    database_url: str, tmp_path: Path
) -> None:
    ran = pixelgate(
        "jobs",
        "run",
        "--only",
        "consent-expiry",
        "--dry-run",
        cwd=tmp_path,
        database_url=database_url,
    )
    assert ran.returncode == 0, ran.stderr
    [line] = ran.stdout.splitlines()
    result = json.loads(line)
    assert result["job"] == "consent-expiry" and result["dry_run"] is True
    assert set(result["counts"]) == {"consents_expired", "ledger_entries_purged", "changes_purged"}
    everything = pixelgate_here(
        "jobs", "run", "--dry-run", "--as-of", "2999-01-01", cwd=tmp_path, database_url=database_url
    )
    assert [json.loads(x)["job"] for x in everything.stdout.splitlines()] == [
        "dsar",
        "consent-expiry",
        "retention",
        "reports",
    ]
    assert json.loads(everything.stdout.splitlines()[0])["as_of"].startswith("2999-01-01")
    one_line_error(
        pixelgate_here(
            "jobs", "run", "--as-of", "2001-01-01", cwd=tmp_path, database_url=database_url
        ),
        2,
        "in the past",
    )
    one_line_error(
        pixelgate_here("jobs", "run", "--only", "everything", cwd=tmp_path), 2, "invalid choice"
    )


def test_jobs_run_on_a_terminal_draws_a_progress_bar(database_url: str, tmp_path: Path) -> None:
    import pty

    env = {
        "PATH": os.environ["PATH"],
        "PIXELGATE_POLICIES_DIR": str(POLICIES),
        "PIXELGATE_SECRET_KEY": base64.b64encode(SECRET).decode(),
        "PIXELGATE_DATABASE_URL": database_url,
        "TERM": "xterm",
    }
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "jobs", "run", "--only", "retention", "--dry-run"],
        cwd=tmp_path, env=env, stdin=terminal, stdout=terminal, stderr=terminal,
    )  # fmt: skip
    os.close(terminal)
    assert process.wait(timeout=60) == 0
    output = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    os.close(controller)
    assert b'"job":"retention"' in output.replace(b"\r\n", b"")
    assert b"\x1b[" in output  # the terminal got drawn on, not plain lines


def test_sites_list_keeps_one_site_a_line_whatever_its_controller_holds(
    database_url: str, tmp_path: Path
) -> None:
    """JSON allows U+2028 and U+2029 inside strings; many line readers end a line there."""
    slug = f"lines-{secrets.token_hex(3)}"
    name = "Shoes\u2028and\u2029Hats Ltd"
    created = pixelgate_here(
        "sites", "create", slug, "--policy", "ccpa", "--controller", name,
        cwd=tmp_path, database_url=database_url,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    listed = pixelgate_here("sites", "list", cwd=tmp_path, database_url=database_url)
    sites = {s["slug"]: s for s in map(json.loads, listed.stdout.splitlines())}
    assert sites[slug]["controller"] == name
