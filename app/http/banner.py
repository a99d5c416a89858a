"""`GET /v1/sites/{site}/banner.js`: the consent banner a site's pages load with one script tag
(SPEC §4.10). The script is app/http/static/banner.js, called with the site's purposes (from
its policy), the kinds each needs, its texts in every shipped language and pixelgate's URLs,
all written into the answer: the page fetches nothing else before a choice."""

import functools
import json
from typing import Any

import msgspec
from litestar import Response, get
from litestar.di import NamedDependency

from app.base.tables import Site
from app.http.context import Context
from app.http.web import STATIC
from consent.policy import Policy


class BannerPurpose(msgspec.Struct):
    name: str
    title: dict[str, str]  # per language
    description: str  # the policy's own words
    gpc: bool  # Global Privacy Control denies it


class BannerConfig(msgspec.Struct):
    site: str
    name: str
    # The policy version a choice is kept under, where a new version voids earlier consents
    # (reconsent_on_change): the banner asks again once it changes. Empty otherwise.
    policy: str
    api: str
    pixel: str
    notice: str
    privacy: str
    purposes: list[BannerPurpose]
    kinds: dict[str, list[str]]
    texts: dict[str, dict[str, Any]]
    css: str


@functools.cache
def _assets() -> tuple[str, str, dict[str, dict[str, Any]]]:
    script = (STATIC / "banner.js").read_text()
    css = (STATIC / "banner.css").read_text()
    texts = json.loads((STATIC / "banner-texts.json").read_text())
    return script, css, texts


def banner_config(site: Site, policy: Policy, base_url: str) -> BannerConfig:
    _, css, texts = _assets()
    denied_by_gpc = policy.gpc_denies()
    purposes = [
        BannerPurpose(
            name=name,
            title={
                lang: words["purposes"].get(name, name.replace("_", " ").capitalize())
                for lang, words in texts.items()
            },
            description=purpose.description,
            gpc=name in denied_by_gpc,
        )
        for name, purpose in policy.file.purposes.items()
    ]
    return BannerConfig(
        site=site.slug,
        name=site.controller or site.slug,
        policy=policy.version if policy.file.reconsent_on_change else "",
        api=f"{base_url}/v1/sites/{site.slug}",
        pixel=f"{base_url}/p/{site.slug}/pixel.gif",
        notice=f"{base_url}/v1/sites/{site.slug}/policy",
        privacy=f"{base_url}/privacy/{site.slug}",
        purposes=purposes,
        kinds=policy.file.kinds,
        texts=texts,
        css=css,
    )


def _as_script_literal(value: Any) -> str:
    """JSON that stays a literal inside any script: no "</" to end a tag, no line separators
    that older engines took for line ends."""
    text = msgspec.json.encode(value).decode()
    return text.replace("</", "<\\/").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


@get(
    "/v1/sites/{site:str}/banner.js",
    media_type="text/javascript",
    summary="The consent banner script for the site's pages",
)
async def banner_script(
    site_row: NamedDependency[Site], ctx: NamedDependency[Context]
) -> Response[str]:
    script, _, _ = _assets()
    config = banner_config(site_row, ctx.policies[site_row.policy], ctx.settings.base_url)
    body = (
        "(function () {\n"
        f"{script}\n"
        f"pixelgateBanner({_as_script_literal(config)}, document.currentScript);\n"
        "})();\n"
    )
    # Short-lived: a change of policy or site reaches pages within minutes.
    return Response(
        body,
        media_type="text/javascript",
        headers={"Cache-Control": "public, max-age=300"},
    )
