"""Consent endpoints (SPEC §4.4): give, read, history, withdraw; receipts and their keys."""

import html
import ipaddress
import secrets
from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import MediaType, Request, Response, delete, get, head, post, route
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from sqlalchemy.ext.asyncio import AsyncSession

from app.base.db import utcnow
from app.base.keys import truncate_ip
from app.base.sites import jurisdiction_of
from app.base.tables import Site, is_storable
from app.hits.useragent import classify
from app.http.auth import bearer, live_subject_claim, require_key, subject_token
from app.http.context import Context
from app.http.deps import Subject, cors_headers
from app.http.guards import admin_or_path_subject
from app.http.pages import page
from app.http.problems import Problem
from app.http.ratelimit import client_address, client_of
from consent import ledger, receipts, store
from consent.decide import Signals, decide_purpose
from consent.ledger import LedgerEntry
from consent.policy import Policy
from consent.tables import ConsentLedger

# A label, not free text: it is kept in the ledger and the receipt for as long as they live.
SOURCE = r"^[a-z0-9][a-z0-9_-]{0,63}$"
GPC_HANDLING_SINCE = "2026-11-29"  # when pixelgate's handling of Sec-GPC last changed


class ProofIn(msgspec.Struct, forbid_unknown_fields=True):
    """The person's own network proof, passed on by the site's server that saw their request.
    Reduced like a request's own before it is kept (the IP to its prefix, the agent to its
    family); the raw values are never stored."""

    ip: Annotated[str, msgspec.Meta(min_length=2, max_length=64)] | None = None
    user_agent: Annotated[str, msgspec.Meta(max_length=512)] | None = None


class ConsentIn(msgspec.Struct, forbid_unknown_fields=True):
    purposes: Annotated[dict[str, bool], msgspec.Meta(min_length=1)]
    # Absent on the public path: the server mints a visitor id.
    subject: Subject | None = None
    policy_version: str | None = None
    source: Annotated[str, msgspec.Meta(pattern=SOURCE)] = "api"
    # Only with a key: on the public path the request itself is the person's proof.
    proof: ProofIn | None = None


class ConsentOut(msgspec.Struct, omit_defaults=True):
    receipt: str
    subject_token: str
    purposes: dict[str, bool]
    expires_at: datetime | None
    subject: str | None = None  # only a visitor id the server minted, never one it was given


class PurposeState(msgspec.Struct):
    allowed: bool
    reason: str
    updated_at: datetime | None
    expires_at: datetime | None


class StateOut(msgspec.Struct):
    subject: str  # the pseudonym
    policy_version: str
    purposes: dict[str, PurposeState]


class HistoryOut(msgspec.Struct):
    subject: str
    entries: list[LedgerEntry]


def consent_proof(
    request: Request[Any, Any, Any],
    site: Site,
    ctx: Context,
    source: str,
    *,
    by_key: bool,
    given: ProofIn | None = None,
) -> store.Proof:
    """How the consent was collected. From the person's own request (no key), its client's
    address and user agent; from the site's server (`by_key`), that server's address and agent
    say nothing of the person, so only the proof it passes on (`given`) is kept, if any."""
    region = request.headers.get(ctx.settings.region_header) if ctx.settings.region_header else None
    if by_key:
        ip = given.ip if given else None
        user_agent = given.user_agent if given else None
    else:
        ip = client_address(request, ctx.settings.trusted_proxies)
        user_agent = request.headers.get("user-agent", "")
    return store.Proof(
        source=source,
        ip_prefix=truncate_ip(ip),
        ua_family=_family(user_agent),
        jurisdiction=jurisdiction_of(region, site.jurisdiction),
    )


def _family(user_agent: str | None) -> str | None:
    if user_agent is None:
        return None
    agent = classify(user_agent)
    return f"{agent.browser} / {agent.os}"


def _check_proof(proof: ProofIn) -> None:
    # The values are the person's: the detail names the field, never the value.
    if proof.ip is not None:
        try:
            ipaddress.ip_address(proof.ip)
        except ValueError:
            raise Problem(422, "proof.ip: not an IP address") from None
    if proof.user_agent is not None and not is_storable(proof.user_agent):
        raise Problem(422, "proof.user_agent: control characters are not allowed")


def _receipt(
    ctx: Context, entry: ConsentLedger, policy: Policy, site: Site, minted: str | None = None
) -> ConsentOut:
    # Only an admin key, the subject's own token or a freshly minted id reach this: a fresh
    # token goes to whoever may already hold one.
    url = _policy_url(ctx, site.slug)
    return ConsentOut(
        receipt=ctx.signer.sign(receipts.claims(entry, policy, url, site)),
        subject_token=subject_token(ctx.keyring, entry.site, entry.subject, utcnow()),
        purposes=entry.purposes,
        expires_at=entry.expires_at,
        subject=minted,
    )


def _policy_url(ctx: Context, site: str) -> str:
    return f"{ctx.settings.base_url}/v1/sites/{site}/policy"


def _check_body(body: ConsentIn, policy: Policy, by_key: bool) -> None:
    if body.proof is not None:
        if not by_key:
            raise Problem(
                422, "proof: only a site's server sends one, with a key; here the request is it"
            )
        _check_proof(body.proof)
    unknown = sorted(set(body.purposes) - set(policy.file.purposes))
    if unknown:
        known = ", ".join(sorted(policy.file.purposes))
        raise Problem(422, f"unknown purposes {unknown}; this policy knows: {known}")
    if body.policy_version is not None and body.policy_version != policy.version:
        raise Problem(
            409, f"policy_version {body.policy_version!r} is not current ({policy.version!r})"
        )


@route(
    ["/v1/sites/{site:str}/consent", "/v1/sites/{site:str}/consent/{subject:str}"],
    http_method="OPTIONS",
    include_in_schema=False,
)
async def consent_preflight(
    request: Request[Any, Any, State], site_row: NamedDependency[Site]
) -> Response[None]:
    cors = cors_headers(site_row, request.headers.get("origin"))
    return Response(None, status_code=204, headers=cors)


NOT_YOURS = (
    "a subject in the body needs that subject's X-Subject-Token (or an admin key); "
    "leave subject out to be given a new visitor id"
)


def mint_visitor_id() -> str:
    """A first-party visitor id nobody can guess (128 bits), URL-safe."""
    return secrets.token_urlsafe(16)


async def _public_caller(
    request: Request[Any, Any, Any],
    session: AsyncSession,
    ctx: Context,
    site: Site,
    data: ConsentIn,
    cors: dict[str, str],
) -> None:
    """Without a key: a new visitor (no subject; limited per client) or the holder of the
    subject's own token (limited per token). Anything else is one 403, the same whether or not
    the subject exists, so the answer tells nothing about who has consented."""
    origin = request.headers.get("origin")
    if origin and origin.lower() not in site.origins:
        raise Problem(403, f"origin {origin} is not allowed for site {site.slug}")
    token = request.headers.get("x-subject-token")
    if data.subject is None:
        if token is not None:
            raise Problem(422, "subject: name the subject of the X-Subject-Token, or send neither")
        client = client_of(request, ctx.settings.trusted_proxies)
        ctx.consent_limiter.check(site.slug, client, cors)
        return
    claim = await live_subject_claim(session, ctx, token, cors) if token else None
    pseudonym = ctx.keyring.pseudonym(site.slug, data.subject)
    if claim is None or claim.site != site.slug or claim.subject != pseudonym:
        raise Problem(403, NOT_YOURS, cors)


@post(
    "/v1/sites/{site:str}/consent",
    status_code=201,
    summary="Give or refuse consent",
    description=(
        "Public (CORS: the site's origins only) or with an admin key.\n\n"
        "- Public, no `subject` in the body: the server mints a random visitor id (128 bits, "
        "URL-safe) and returns it as `subject` with its `subject_token`; rate limited per "
        "client.\n"
        "- Public, with `subject`: only with that subject's `X-Subject-Token` (else 403, the "
        "same answer whether or not the subject exists); rate limited per token.\n"
        "- Admin key (server to server): any id the site assigns itself (customer id, e-mail); "
        "the site hands the returned token to its signed-in user. The ledger keeps nothing of "
        "the calling server's address or agent: only a `proof` the body passes on, the "
        "person's own `ip` and `user_agent`, kept as an IP prefix and an agent family. A "
        "keyless body may not carry one (422): its request is the proof.\n\n"
        "Every 201 carries a fresh subject token: it opens the subject's consent and requests, "
        "expires after PIXELGATE_SUBJECT_TOKEN_DAYS, and dies with an erasure of its subject."
    ),
)
async def give_consent(
    request: Request[Any, Any, State],
    site: FromPath[str],
    data: JSONBody[ConsentIn],
    ctx: NamedDependency[Context],
    session: NamedDependency[AsyncSession],
    site_row: NamedDependency[Site],
) -> Response[ConsentOut]:
    cors = cors_headers(site_row, request.headers.get("origin"))
    # Who may give it depends on the body (a subject or none), so it is decided here.
    by_key = bearer(request) is not None
    if by_key:
        await require_key(request, session, ctx.keyring, site, "admin")
    else:
        await _public_caller(request, session, ctx, site_row, data, cors)
    policy = ctx.policies[site_row.policy]
    _check_body(data, policy, by_key)
    subject = mint_visitor_id() if data.subject is None else data.subject
    entry = await store.record(
        session,
        site=site,
        subject=ctx.keyring.pseudonym(site, subject),
        purposes=data.purposes,
        policy=policy,
        proof=consent_proof(request, site_row, ctx, data.source, by_key=by_key, given=data.proof),
        now=utcnow(),
    )
    minted = subject if data.subject is None else None
    out = _receipt(ctx, entry, policy, site_row, minted)
    return Response(out, status_code=201, headers=cors)


WHO_READS = (
    "With an admin key of the site, or with the subject's own `X-Subject-Token` (CORS: the "
    "site's origins; rate limited per token). A token that has expired or predates an erasure "
    "of its subject is refused (401)."
)


@get(
    "/v1/sites/{site:str}/consent/{subject:str}",
    dependencies=admin_or_path_subject(),
    summary="Current consent per purpose",
    description=WHO_READS,
)
async def read_consent(
    request: Request[Any, Any, State],
    site: FromPath[str],
    subject: FromPath[str],
    ctx: NamedDependency[Context],
    session: NamedDependency[AsyncSession],
    site_row: NamedDependency[Site],
) -> Response[StateOut]:
    pseudonym = ctx.keyring.pseudonym(site, subject)
    rows = {row.purpose: row for row in await store.current(session, site, pseudonym)}
    policy, now = ctx.policies[site_row.policy], utcnow()
    purposes = {}
    for name in policy.file.purposes:
        row = rows.get(name)
        record = store.as_record(row) if row else None
        decided = decide_purpose(policy, name, record, Signals(), site_row.jurisdiction, now)
        purposes[name] = PurposeState(
            allowed=decided.allowed,
            reason=decided.reason,
            updated_at=row.updated_at if row else None,
            expires_at=row.expires_at if row else None,
        )
    out = StateOut(subject=pseudonym, policy_version=policy.version, purposes=purposes)
    return Response(out, headers=cors_headers(site_row, request.headers.get("origin")))


@get(
    "/v1/sites/{site:str}/consent/{subject:str}/history",
    dependencies=admin_or_path_subject(),
    summary="The consent ledger",
    description=WHO_READS,
)
async def consent_history(
    request: Request[Any, Any, State],
    site: FromPath[str],
    subject: FromPath[str],
    ctx: NamedDependency[Context],
    session: NamedDependency[AsyncSession],
    site_row: NamedDependency[Site],
) -> Response[HistoryOut]:
    pseudonym = ctx.keyring.pseudonym(site, subject)
    entries = await store.history(session, site, pseudonym)
    out = HistoryOut(
        subject=pseudonym,
        entries=ledger.entries(entries),
    )
    return Response(out, headers=cors_headers(site_row, request.headers.get("origin")))


@delete(
    "/v1/sites/{site:str}/consent/{subject:str}",
    status_code=200,
    dependencies=admin_or_path_subject(),
    summary="Withdraw every purpose",
    description=WHO_READS + " The answer carries a fresh subject token.",
)
async def withdraw_consent(
    request: Request[Any, Any, State],
    site: FromPath[str],
    subject: FromPath[str],
    ctx: NamedDependency[Context],
    session: NamedDependency[AsyncSession],
    site_row: NamedDependency[Site],
) -> Response[ConsentOut]:
    pseudonym = ctx.keyring.pseudonym(site, subject)
    policy = ctx.policies[site_row.policy]
    entry = await store.withdraw(
        session,
        site=site,
        subject=pseudonym,
        policy=policy,
        # Without a subject token, the admin key let the site's server in.
        proof=consent_proof(
            request, site_row, ctx, "withdrawal", by_key="x-subject-token" not in request.headers
        ),
        now=utcnow(),
    )
    out = _receipt(ctx, entry, policy, site_row)
    return Response(out, headers=cors_headers(site_row, request.headers.get("origin")))


@get("/.well-known/jwks.json", summary="Public keys that verify consent receipts")
async def jwks(session: NamedDependency[AsyncSession]) -> dict[str, list[dict[str, Any]]]:
    return await receipts.jwks(session)


@head("/.well-known/jwks.json", summary="The headers of the JWKS, without it")
async def jwks_head(session: NamedDependency[AsyncSession]) -> Response[None]:
    # The length GET would send: caches and probes compare it.
    body = msgspec.json.encode(await receipts.jwks(session))
    return Response(None, media_type=MediaType.JSON, headers={"Content-Length": str(len(body))})


def responsible(site: Site) -> str:
    """The notice's section naming the controller (GDPR Art. 13(1)(a)); empty while the site
    has been given none of its controller's identity."""
    known = [
        ("E-mail", site.contact_email),
        ("Postal address", site.address),
        ("Phone", site.phone),
        ("Website", site.homepage),
    ]
    if site.controller is None and not any(value for _, value in known):
        return ""
    name = site.controller or f"The operator of site {site.slug}"
    lines = ["## Who is responsible", "", f"{name} is responsible for this processing.", ""]
    lines += [f"- {label}: {value}" for label, value in known if value]
    return "\n".join(lines).rstrip() + "\n"


@get(
    "/v1/sites/{site:str}/policy",
    media_type="text/markdown",
    summary="The privacy notice",
    description="Markdown; a browser (asking for text/html) gets it as a page to read.",
)
async def policy_notice(
    request: Request[Any, Any, State],
    site_row: NamedDependency[Site],
    ctx: NamedDependency[Context],
) -> Response[str]:
    policy = ctx.policies[site_row.policy]
    headers = {
        "X-Policy-Version": policy.version,
        "X-Policy-SHA256": policy.sha256,
        "Vary": "Accept",
    }
    # Appended after the notice file, which stays exactly what X-Policy-SHA256 versions.
    text = "\n".join(part for part in (policy.notice_text, responsible(site_row)) if part)
    if "text/html" in request.headers.get("accept", ""):
        title = f"Privacy notice of {site_row.controller or site_row.slug}"
        notice = page(title, f'<main><pre class="notice">{html.escape(text)}</pre></main>')
        notice.headers.update(headers)
        return notice
    return Response(text, media_type="text/markdown", headers=headers)


@get("/.well-known/gpc.json", summary="Global Privacy Control support")
async def gpc_support() -> dict[str, Any]:
    # Every policy honours GPC: it always denies the sale/share purposes (decide.py).
    return {"gpc": True, "lastUpdate": GPC_HANDLING_SINCE}
