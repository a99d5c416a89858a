"""The web pages people open (SPEC §4.10): the start page, the privacy center of a site's
visitors, the dashboard of a site's marketers and the demo site's shop. Each page is
a small HTML shell; what it shows, it asks the API for with the visitor's own credentials, in
a script served from the package (/static/). Pages hold no inline script or style and load
nothing from another origin, so their Content-Security-Policy forbids both (app/http/web.py).
"""

import html
import importlib.metadata
import secrets

from litestar import Response, get
from litestar.di import NamedDependency
from litestar.router import Router
from litestar.static_files import create_static_files_router
from sqlalchemy.ext.asyncio import AsyncSession

from app.base.sites import list_sites
from app.base.tables import Site
from app.http.problems import Problem
from app.http.web import CONTENT_SECURITY_POLICY, STATIC, no_such_file

VERSION = importlib.metadata.version("pixelgate")
PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/static/pages.css">{styles}
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


DASHBOARD = """<main data-site="{site}">
<h1>Reports of {name}</h1>
<form id="sign-in" method="post" aria-labelledby="sign-in-title">
<h2 id="sign-in-title">Sign in</h2>
<p>A read key of {name} opens its reports. It is kept for this browser tab only.</p>
<label for="key">Read key</label>
<input id="key" type="password" autocomplete="off" required>
<button type="submit">Sign in</button>
<p id="sign-in-error" class="error" role="alert" hidden></p>
</form>
<div id="reports" hidden>
<form id="range" class="actions" aria-label="Period">
<div><label for="from">From</label><input id="from" type="date" required></div>
<div><label for="to">To</label><input id="to" type="date" required></div>
<div class="bottom"><button type="submit" id="show">Show</button>
<button type="button" id="sign-out" class="secondary">Sign out</button></div>
</form>
<p id="error" class="error" role="alert" hidden></p>
<section aria-labelledby="summary-title">
<h2 id="summary-title">Summary</h2>
<dl id="summary" class="figures"></dl>
<button type="button" class="secondary" data-csv="/reports/summary"
 data-file="summary">Download CSV</button>
</section>
<section aria-labelledby="timeseries-title">
<h2 id="timeseries-title">Hits and people per day</h2>
<div id="timeseries-chart" class="chart" role="img"></div>
<button type="button" class="secondary" data-csv="/reports/timeseries"
 data-params='{{"interval": "day"}}' data-file="timeseries">Download CSV</button>
</section>
{tables}
<section aria-labelledby="campaign-title">
<h2 id="campaign-title">Campaign report</h2>
<label for="campaign">Choose a campaign</label>
<select id="campaign"></select>
<table id="campaign-table"></table>
<h3>Human opens by hour of the day (UTC)</h3>
<div id="opens-chart" class="chart" role="img"></div>
<button type="button" class="secondary" id="campaign-csv" data-csv="campaign"
 data-file="campaign">Download CSV</button>
</section>
<section aria-labelledby="requests-title" id="requests-section" hidden>
<h2 id="requests-title">Open data subject requests</h2>
<table id="requests"></table>
</section>
</div>
</main>
<script src="/static/uplot/uPlot.iife.min.js"></script>
<script src="/static/dashboard.js"></script>
"""
# (table id, title, CSV path, CSV parameters): the dashboard's tables of one report each
TABLES = [
    ("pages", "Top pages", "/reports/breakdown", '{"by": "page", "limit": 10}'),
    ("sources", "Sources", "/reports/breakdown", '{"by": "utm_source", "limit": 10}'),
    ("campaigns", "Campaigns", "/reports/breakdown", '{"by": "campaign", "limit": 10}'),
    ("influencers", "Influencers: clicks to conversions", "/reports/influencers", "{}"),
    ("devices", "Devices", "/reports/breakdown", '{"by": "device", "limit": 10}'),
    ("audiences", "Audiences", "/reports/audiences", "{}"),
    ("consent", "Consent by purpose", "/reports/consent", "{}"),
]
TABLE = """<section aria-labelledby="{id}-title">
<h2 id="{id}-title">{title}</h2>
<table id="{id}"></table>
<button type="button" class="secondary" data-csv="{path}" data-params='{params}'
 data-file="{id}">Download CSV</button>
</section>"""


def _tables() -> str:
    return "\n".join(
        TABLE.format(id=id_, title=title, path=path, params=html.escape(params, quote=True))
        for id_, title, path, params in TABLES
    )


FRONT = """<main>
<h1>pixelgate</h1>
<p>This server is <strong>pixelgate {version}</strong>: a tracking pixel that records a hit
only when the person's consent, or the site's policy, allows it, keeps no raw identifier, and
keeps every person's rights (access, erasure, opt-out) one request away.</p>
<ul class="links">
<li><a href="/schema">API documentation</a></li>
{demo}</ul>
<section aria-labelledby="sites-title">
<h2 id="sites-title">Sites</h2>
{sites}
</section>
</main>
"""
NO_SITE = "<p>No site yet: <code>pixelgate sites create</code>, or <code>pixelgate demo</code>.</p>"
SITE_ROW = """<tr><td>{name}</td><td><a href="/dashboard/{slug}">Dashboard (sign in)</a></td>
<td><a href="/v1/sites/{slug}/policy">Privacy notice</a></td></tr>"""
SHOP = """<main class="shop">
<h1>Demo Shoe Shop</h1>
<p>This is the demo site's shop page. It carries the consent banner, as any page of a site
would: one script tag. Choose, then look at the <a href="/dashboard/demo">dashboard</a>.</p>
<ul>
<li><a href="/demo?utm_source=newsletter&amp;utm_campaign=newsletter-weekly">Trail Runner</a>
 — 79.00 EUR</li>
<li>City Walker — 49.00 EUR</li>
</ul>
<button type="button" id="buy">Buy the Trail Runner</button>
</main>
<script src="/v1/sites/demo/banner.js" async nonce="{nonce}"></script>
<script src="/static/demo.js" nonce="{nonce}"></script>
"""


def page(title: str, body: str, styles: tuple[str, ...] = ()) -> Response[str]:
    """An HTML page: the shell, `body` (already HTML) and any more stylesheets of /static/."""
    links = "".join(f'\n<link rel="stylesheet" href="/static/{name}">' for name in styles)
    text = PAGE.format(title=html.escape(title), body=body, styles=links)
    return Response(text, media_type="text/html")


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


@get("/dashboard/{site:str}", include_in_schema=False)
async def dashboard(site_row: NamedDependency[Site]) -> Response[str]:
    name = html.escape(site_row.controller or site_row.slug)
    body = DASHBOARD.format(site=html.escape(site_row.slug), name=name, tables=_tables())
    title = f"Reports of {site_row.controller or site_row.slug}"
    return page(title, body, styles=("uplot/uPlot.min.css",))


@get("/", include_in_schema=False)
async def front_door(session: NamedDependency[AsyncSession]) -> Response[str]:
    sites = await list_sites(session)
    rows = "\n".join(
        SITE_ROW.format(name=html.escape(site.controller or site.slug), slug=html.escape(site.slug))
        for site in sites
    )
    table = (
        f'<table><thead><tr><th scope="col">Site</th><th scope="col">Reports</th>'
        f'<th scope="col">Notice</th></tr></thead><tbody>{rows}</tbody></table>'
        if sites
        else NO_SITE
    )
    demo = (
        '<li><a href="/demo">The demo shop</a></li>\n'
        if any(s.slug == "demo" for s in sites)
        else ""
    )
    body = FRONT.format(version=html.escape(VERSION), demo=demo, sites=table)
    return page("pixelgate", body)


@get("/demo", include_in_schema=False)
async def demo_shop(session: NamedDependency[AsyncSession]) -> Response[str]:
    """The demo site's shop page, with its banner (the page's own CSP, with a nonce for it)."""
    if await session.get(Site, "demo") is None:
        raise Problem(404, "no demo site: run `pixelgate demo` first")
    nonce = secrets.token_urlsafe(16)
    shop = page("Demo Shoe Shop", SHOP.format(nonce=nonce))
    shop.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY.replace(
        "script-src 'self'", f"script-src 'self' 'nonce-{nonce}'"
    ).replace("style-src 'self'", f"style-src 'self' 'nonce-{nonce}'")
    return shop


static_files: Router = create_static_files_router(
    path="/static",
    directories=[STATIC],
    name="static",
    include_in_schema=False,
    exception_handlers={ValueError: no_such_file},
)
