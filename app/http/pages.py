"""The web pages people open (SPEC §4.10): the privacy center of a site's visitors. Each page is
a small HTML shell; what it shows, it asks the API for with the visitor's own credentials, in
a script served from the package (/static/). Pages hold no inline script or style and load
nothing from another origin, so their Content-Security-Policy forbids both (app/http/web.py).
"""

import html

from litestar import Response, get
from litestar.di import NamedDependency
from litestar.router import Router
from litestar.static_files import create_static_files_router

from app.base.tables import Site
from app.http.web import STATIC, no_such_file

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/static/pages.css">
</head>
<body>
<header><strong>pixelgate</strong> · <a href="/">start</a></header>
{body}
</body>
</html>
"""

PRIVACY = """<main data-site="{site}" data-regulation="{regulation}">
<h1>Your data at {name}</h1>
<p id="status" class="status" role="status" hidden></p>
<p id="error" class="error" role="alert" hidden></p>
<section id="no-token" hidden>
<p>This page shows what {name} holds about you. Open it from the site's
<strong>Privacy choices</strong> button, after you have made a choice there.</p>
</section>
<div id="signed-in" hidden>
<section aria-labelledby="consent-title">
<h2 id="consent-title">Your consent</h2>
<table>
<thead><tr><th scope="col">Purpose</th><th scope="col">State</th><th scope="col">Since</th>
<th scope="col">Expires</th></tr></thead>
<tbody id="purposes"></tbody>
</table>
<div class="actions"><button type="button" id="withdraw">Withdraw all consent</button></div>
</section>
<section aria-labelledby="history-title">
<h2 id="history-title">History</h2>
<table>
<thead><tr><th scope="col">When</th><th scope="col">What</th><th scope="col">Purposes</th>
<th scope="col">Policy version</th><th scope="col">Given through</th></tr></thead>
<tbody id="history"></tbody>
</table>
</section>
<section aria-labelledby="data-title">
<h2 id="data-title">Your data</h2>
<p>Download everything recorded about you, or have it erased.</p>
<div class="actions">
<button type="button" id="download">Download my data</button>
<a id="export-link" class="button" hidden>Save my data (JSON)</a>
<button type="button" id="erase" class="danger">Erase my data</button>
</div>
</section>
<p><a href="{notice}">The privacy notice of {name}</a></p>
</div>
<dialog id="confirm-erase" aria-labelledby="erase-title">
<h2 id="erase-title">Erase all your data?</h2>
<p>Everything {name} recorded about you, and your consent, is deleted. This cannot be
undone.</p>
<form method="dialog" class="actions">
<button type="button" id="erase-cancel" class="secondary">Cancel</button>
<button type="submit" id="erase-confirm" class="danger">Erase my data</button>
</form>
</dialog>
</main>
<script src="/static/privacy.js"></script>
"""


def page(title: str, body: str) -> Response[str]:
    return Response(PAGE.format(title=html.escape(title), body=body), media_type="text/html")


@get("/privacy/{site:str}", include_in_schema=False)
async def privacy_center(site_row: NamedDependency[Site]) -> Response[str]:
    name = html.escape(site_row.controller or site_row.slug)
    regulation = "ccpa" if site_row.jurisdiction.startswith("us") else "gdpr"
    body = PRIVACY.format(
        site=html.escape(site_row.slug),
        regulation=regulation,
        name=name,
        notice=html.escape(f"/v1/sites/{site_row.slug}/policy"),
    )
    return page(f"Your data at {site_row.controller or site_row.slug}", body)


static_files: Router = create_static_files_router(
    path="/static",
    directories=[STATIC],
    name="static",
    include_in_schema=False,
    exception_handlers={ValueError: no_such_file},
)
