"""Settings from the environment (SPEC §2): defaults, the master secret, one-line errors."""

import base64
import os
import stat
from pathlib import Path

import pytest

from app.base.settings import DEFAULT_DATABASE_URL, ConfigError, Settings, load_settings
from tests.factories import POLICIES

KEY = bytes(range(32))
POSTGRES = "postgresql+asyncpg://pixelgate@db.example.test/pixelgate"


def load(data_dir: Path, **env: str) -> Settings:
    return load_settings(env={"PIXELGATE_POLICIES_DIR": str(POLICIES), **env}, data_dir=data_dir)


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def test_an_empty_environment_gives_the_documented_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "policies").mkdir()
    settings = load_settings(env={}, data_dir=tmp_path / "data")
    assert (
        settings.database_url == DEFAULT_DATABASE_URL == "sqlite+aiosqlite:///./data/pixelgate.db"
    )
    assert settings.is_sqlite
    assert settings.policies_dir == Path("policies")
    assert (settings.host, settings.port, settings.workers) == ("127.0.0.1", 8000, 1)
    assert settings.jobs is True
    assert settings.region_header is None
    assert len(settings.secret_key) == 32
    assert settings.base_url == "http://127.0.0.1:8000"
    assert settings.trusted_proxies == ()
    assert settings.metrics_allow == ("127.0.0.0/8", "::1/128")
    assert settings.metrics_token is None
    assert settings.spool_dir == tmp_path / "data" / "spool"
    assert settings.subject_token_days == 400


def test_empty_variables_count_as_unset(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        PIXELGATE_DATABASE_URL="",
        PIXELGATE_SECRET_KEY="",
        PIXELGATE_HOST="",
        PIXELGATE_PORT="",
        PIXELGATE_WORKERS="",
        PIXELGATE_REGION_HEADER="",
        PIXELGATE_JOBS="",
    )
    assert settings.jobs is True
    assert settings.database_url == DEFAULT_DATABASE_URL
    assert (settings.host, settings.port, settings.workers) == ("127.0.0.1", 8000, 1)
    assert settings.region_header is None


def test_every_variable_is_read(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        PIXELGATE_DATABASE_URL=POSTGRES,
        PIXELGATE_SECRET_KEY=b64(KEY),
        PIXELGATE_HOST="192.0.2.10",
        PIXELGATE_PORT="8080",
        PIXELGATE_WORKERS="4",
        PIXELGATE_JOBS="OFF",
        PIXELGATE_REGION_HEADER="CF-IPCountry",
        PIXELGATE_PUBLIC_URL="https://px.example.test/",
        PIXELGATE_TRUSTED_PROXIES="10.0.0.0/8, 2001:db8::1",
        PIXELGATE_METRICS_ALLOW="192.0.2.0/24",
        PIXELGATE_METRICS_TOKEN="scrape-me",
        PIXELGATE_SPOOL_DIR="/var/spool/pixelgate",
        PIXELGATE_SUBJECT_TOKEN_DAYS="30",
    )
    assert settings.base_url == settings.public_url == "https://px.example.test"
    assert settings.trusted_proxies == ("10.0.0.0/8", "2001:db8::1/128")
    assert settings.metrics_allow == ("192.0.2.0/24",)
    assert settings.metrics_token == "scrape-me"
    assert settings.spool_dir == Path("/var/spool/pixelgate")
    assert settings.subject_token_days == 30
    assert settings.database_url == POSTGRES
    assert settings.secret_key == KEY
    assert settings.policies_dir == POLICIES
    assert (settings.host, settings.port, settings.workers) == ("192.0.2.10", 8080, 4)
    assert settings.jobs is False
    assert settings.region_header == "CF-IPCountry"


def test_a_missing_secret_is_generated_once_into_the_data_dir_with_mode_0600(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    first = load(data_dir)
    path = data_dir / "secret.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert base64.b64decode(path.read_text().strip(), validate=True) == first.secret_key
    assert len(first.secret_key) == 32
    assert load(data_dir).secret_key == first.secret_key


def test_two_data_dirs_get_two_different_secrets(tmp_path: Path) -> None:
    assert load(tmp_path / "a").secret_key != load(tmp_path / "b").secret_key


def test_a_given_secret_key_is_used_as_is_and_nothing_is_written(tmp_path: Path) -> None:
    settings = load(tmp_path, PIXELGATE_SECRET_KEY=b64(KEY))
    assert settings.secret_key == KEY
    assert not (tmp_path / "secret.key").exists()


def test_a_given_secret_key_wins_over_the_secret_file(tmp_path: Path) -> None:
    (tmp_path / "secret.key").write_text(b64(bytes(32)) + "\n")
    assert load(tmp_path, PIXELGATE_SECRET_KEY=b64(KEY)).secret_key == KEY


def test_a_longer_secret_key_is_accepted(tmp_path: Path) -> None:
    assert load(tmp_path, PIXELGATE_SECRET_KEY=b64(KEY * 2)).secret_key == KEY * 2


BAD_ENVIRONMENTS = [
    # variable named in the message, why (a fragment), environment
    pytest.param("PIXELGATE_PORT", "not an integer", {"PIXELGATE_PORT": "http"}, id="port word"),
    pytest.param("PIXELGATE_PORT", "outside 1..65535", {"PIXELGATE_PORT": "0"}, id="port 0"),
    pytest.param("PIXELGATE_PORT", "outside 1..65535", {"PIXELGATE_PORT": "65536"}, id="port big"),
    pytest.param("PIXELGATE_WORKERS", "outside 1..256", {"PIXELGATE_WORKERS": "0"}, id="workers 0"),
    pytest.param(
        "PIXELGATE_WORKERS", "not an integer", {"PIXELGATE_WORKERS": "two"}, id="workers word"
    ),
    pytest.param(
        "PIXELGATE_SECRET_KEY",
        "not valid base64",
        {"PIXELGATE_SECRET_KEY": "not base64!"},
        id="secret not base64",
    ),
    pytest.param(
        "PIXELGATE_SECRET_KEY",
        "at least 32 bytes",
        {"PIXELGATE_SECRET_KEY": b64(KEY[:31])},
        id="secret 31 bytes",
    ),
    pytest.param(
        "PIXELGATE_JOBS", "must be 'on' or 'off'", {"PIXELGATE_JOBS": "yes"}, id="jobs yes"
    ),
    pytest.param(
        "PIXELGATE_DATABASE_URL",
        "must start with",
        {"PIXELGATE_DATABASE_URL": "mysql://db.example.test/pixelgate"},
        id="mysql",
    ),
    pytest.param(
        "PIXELGATE_DATABASE_URL",
        "must start with",
        {"PIXELGATE_DATABASE_URL": "postgresql://db.example.test/pixelgate"},
        id="sync postgres",
    ),
    pytest.param(
        "PIXELGATE_POLICIES_DIR",
        "is not a directory",
        {"PIXELGATE_POLICIES_DIR": "/nonexistent/pixelgate/policies"},
        id="no policies dir",
    ),
    pytest.param(
        "PIXELGATE_POLICIES_DIR",
        "is not a directory",
        {"PIXELGATE_POLICIES_DIR": str(POLICIES / "ccpa.toml")},
        id="policies dir is a file",
    ),
    pytest.param(
        "PIXELGATE_WORKERS", "use PostgreSQL", {"PIXELGATE_WORKERS": "2"}, id="2 workers sqlite"
    ),
    pytest.param(
        "PIXELGATE_PUBLIC_URL",
        "must be an http(s) URL",
        {"PIXELGATE_PUBLIC_URL": "ftp://px.example.test"},
        id="public url ftp",
    ),
    pytest.param(
        "PIXELGATE_PUBLIC_URL",
        "no query",
        {"PIXELGATE_PUBLIC_URL": "https://px.example.test/?a=1"},
        id="public url query",
    ),
    pytest.param(
        "PIXELGATE_PUBLIC_URL",
        "must be an http(s) URL",
        {"PIXELGATE_PUBLIC_URL": "https://px.example.test/a\nb"},
        id="public url newline",
    ),
    pytest.param(
        "PIXELGATE_TRUSTED_PROXIES",
        "is not an IP network",
        {"PIXELGATE_TRUSTED_PROXIES": "10.0.0.0/8, proxy.example"},
        id="proxies name",
    ),
    pytest.param(
        "PIXELGATE_METRICS_ALLOW",
        "is not an IP network",
        {"PIXELGATE_METRICS_ALLOW": "192.0.2.0/33"},
        id="metrics allow bad mask",
    ),
    pytest.param(
        "PIXELGATE_SUBJECT_TOKEN_DAYS",
        "outside 1..3650",
        {"PIXELGATE_SUBJECT_TOKEN_DAYS": "0"},
        id="token days 0",
    ),
]


@pytest.mark.parametrize(("variable", "why", "env"), BAD_ENVIRONMENTS)
def test_a_bad_value_stops_start_up_with_one_line_naming_the_variable(
    tmp_path: Path, variable: str, why: str, env: dict[str, str]
) -> None:
    with pytest.raises(ConfigError) as raised:
        load(tmp_path, **env)
    message = str(raised.value)
    assert message.startswith(f"{variable}: ")
    assert why in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("content", "why"),
    [
        pytest.param(b64(KEY[:16]), "must decode to at least 32 bytes", id="short"),
        pytest.param("not base64!", "not valid base64", id="not base64"),
    ],
)
def test_a_bad_secret_file_stops_start_up_naming_the_file(
    tmp_path: Path, content: str, why: str
) -> None:
    path = tmp_path / "secret.key"
    path.write_text(content + "\n")
    with pytest.raises(ConfigError) as raised:
        load(tmp_path)
    assert str(raised.value) == f"{path}: {why}"


def test_two_processes_starting_at_once_share_the_secret_the_first_one_wrote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "secret.key"
    real_open = os.open

    def rival_writes_first(file: Path, flags: int, mode: int = 0o777) -> int:
        path.write_text(b64(KEY) + "\n")  # the other process wins the race
        return real_open(file, flags, mode)

    monkeypatch.setattr("app.base.settings.os.open", rival_writes_first)
    assert load(tmp_path).secret_key == KEY


def test_several_workers_are_accepted_on_postgresql(tmp_path: Path) -> None:
    settings = load(tmp_path, PIXELGATE_DATABASE_URL=POSTGRES, PIXELGATE_WORKERS="2")
    assert settings.workers == 2
    assert not settings.is_sqlite


def test_one_worker_is_accepted_on_sqlite(tmp_path: Path) -> None:
    assert load(tmp_path, PIXELGATE_WORKERS="1").workers == 1


def test_a_secret_key_with_a_trailing_newline_is_accepted(tmp_path: Path) -> None:
    assert load(tmp_path, PIXELGATE_SECRET_KEY=b64(KEY) + "\n").secret_key == KEY


def test_a_bad_setting_writes_no_secret_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load(tmp_path, PIXELGATE_SECRET_KEY="", PIXELGATE_PORT="99999")
    assert not (tmp_path / "secret.key").exists()
