"""schemathesis against a live `pixelgate serve`, on SQLite and PostgreSQL, with an admin key:
no input gives a server error, and no response contradicts the OpenAPI document (its status,
content type, headers and body)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.factories import make_key, make_site, settings_for
from tests.servers import Server

SEED = 20261202
EXAMPLES = 30  # per operation and phase: over a thousand cases in all, the same each run
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    ]
)


def _config(site: str, key: str) -> str:
    return f"""
[parameters]
"path.site" = "{site}"

[headers]
Authorization = "Bearer {key}"
"""


@pytest.mark.slow
def test_no_input_gives_a_server_error_or_contradicts_the_schema(
    database_url: str, tmp_path: Path
) -> None:
    settings = settings_for(database_url)
    site = make_site(settings, origins=("https://shop.example",))
    config = tmp_path / "schemathesis.toml"
    config.write_text(_config(site, make_key(settings, site)))
    server = Server(database_url, tmp_path, PIXELGATE_JOBS="off").start()
    try:
        run = subprocess.run(
            [
                str(Path(sys.executable).with_name("st")),
                "--config-file",
                str(config),
                "run",
                f"{server.url}/schema/openapi.json",
                "--checks",
                CHECKS,
                "--seed",
                str(SEED),
                "--max-examples",
                str(EXAMPLES),
                "--phases",
                "coverage,fuzzing",
                # One thread: with two, both may parse source at once (anyio's lazy import),
                # and CPython 3.11 counts the AST builder's depth per interpreter, not per
                # thread ("AST constructor recursion depth mismatch"; see CPython gh-106905).
                "--workers",
                "1",
                "--no-color",
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    finally:
        server.stop()
    report = run.stdout + run.stderr
    assert run.returncode == 0, report[-6000:]
    generated = re.search(r"(\d+) generated, (\d+) passed", report)
    assert generated is not None, report[-2000:]
    print(f"schemathesis on {database_url.split(':')[0]}: {generated.group(0)}")
    server.assert_clean_log()
