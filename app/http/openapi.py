"""What the OpenAPI document adds to what litestar derives from the handlers: who may call
each operation, and every error it can answer, as problem+json.

litestar documents a generic 400 of its own shape for every handler; the API answers errors
as RFC 9457 problems, with statuses litestar cannot know (a 404 for an unknown site, a 429
from a rate limit). They are listed here, one line per operation, and the schemathesis run in
the suite (tests/test_openapi_fuzz.py) fails on any status or body the document does not
declare.
"""

from litestar.openapi.spec import (
    Components,
    OpenAPI,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Reference,
    Schema,
    SecurityRequirement,
    SecurityScheme,
)

from app.http.problems import TITLES

PROBLEM = Schema(
    type=OpenAPIType.OBJECT,
    description="RFC 9457 problem details",
    required=["type", "status", "title", "detail"],
    properties={
        "type": Schema(type=OpenAPIType.STRING),
        "status": Schema(type=OpenAPIType.INTEGER, minimum=400, maximum=599),
        "title": Schema(type=OpenAPIType.STRING),
        "detail": Schema(type=OpenAPIType.STRING),
    },
)
SECURITY_SCHEMES: dict[str, SecurityScheme | Reference] = {
    "ApiKey": SecurityScheme(
        type="http",
        scheme="bearer",
        description="An API key of the site (`pixelgate keys create`): scope admin, read or "
        "ingest; admin includes read and ingest.",
    ),
    "SubjectToken": SecurityScheme(
        type="apiKey",
        name="X-Subject-Token",
        security_scheme_in="header",
        description="A person's own token, returned with their consent: opens their own "
        "consent, history and data subject requests, and nothing else.",
    ),
    "MetricsToken": SecurityScheme(
        type="http",
        scheme="bearer",
        description="PIXELGATE_METRICS_TOKEN: reads /metrics from outside PIXELGATE_METRICS_ALLOW.",
    ),
}
KEY: list[SecurityRequirement] = [{"ApiKey": []}]
KEY_OR_TOKEN: list[SecurityRequirement] = [{"ApiKey": []}, {"SubjectToken": []}]
PUBLIC_KEY_OR_TOKEN: list[SecurityRequirement] = [{}, {"ApiKey": []}, {"SubjectToken": []}]
PUBLIC: list[SecurityRequirement] = []

BODY = (400, 413, 422)  # malformed JSON, too large, the wrong shape or a value refused
AUTH = (401, 403)
SITE = (404,)
# (method, path): (who may call it, the error statuses it can answer)
OPERATIONS: dict[tuple[str, str], tuple[list[SecurityRequirement], tuple[int, ...]]] = {
    ("get", "/v1/sites/{site}"): (KEY, (*AUTH, *SITE)),
    ("patch", "/v1/sites/{site}"): (KEY, (*BODY, *AUTH, *SITE)),
    ("get", "/v1/sites/{site}/debug"): (KEY, (*AUTH, *SITE)),
    ("get", "/metrics"): ([{}, {"MetricsToken": []}], (403,)),
    ("get", "/v1/sites/{site}/dsar"): (KEY, (400, *AUTH, *SITE, 422)),
    ("post", "/v1/sites/{site}/dsar"): (PUBLIC_KEY_OR_TOKEN, (*BODY, *AUTH, *SITE, 429)),
    ("get", "/v1/sites/{site}/dsar/{request_id}"): (KEY_OR_TOKEN, (400, *AUTH, *SITE, 429)),
    ("get", "/v1/sites/{site}/dsar/{request_id}/export"): (
        KEY_OR_TOKEN,
        (400, *AUTH, *SITE, 429),
    ),
    ("post", "/v1/sites/{site}/events"): (KEY, (*BODY, *AUTH, *SITE)),
    ("get", "/v1/sites/{site}/reports/summary"): (KEY, (400, *AUTH, *SITE, 422)),
    ("get", "/v1/sites/{site}/reports/breakdown"): (KEY, (400, *AUTH, *SITE, 422)),
    ("get", "/v1/sites/{site}/reports/timeseries"): (KEY, (400, *AUTH, *SITE, 422)),
    ("get", "/v1/sites/{site}/reports/campaigns/{campaign_id}"): (KEY, (400, *AUTH, *SITE, 422)),
    ("get", "/v1/sites/{site}/reports/influencers"): (KEY, (400, *AUTH, *SITE, 422)),
    ("post", "/v1/sites/{site}/pixel-urls"): (KEY, (*BODY, *AUTH, *SITE)),
    ("put", "/v1/sites/{site}/campaigns/{campaign}"): (KEY, (*BODY, *AUTH, *SITE)),
    ("get", "/v1/sites/{site}/campaigns"): (KEY, (*AUTH, *SITE)),
    ("get", "/v1/sites/{site}/campaigns/{campaign}"): (KEY, (*AUTH, *SITE)),
    ("delete", "/v1/sites/{site}/campaigns/{campaign}"): (KEY, (*AUTH, *SITE)),
    ("post", "/v1/sites/{site}/links"): (KEY, (*BODY, *AUTH, *SITE)),
    ("get", "/v1/sites/{site}/links"): (KEY, (*AUTH, *SITE)),
    ("get", "/v1/sites/{site}/links/{code}"): (KEY, (*AUTH, *SITE)),
    ("delete", "/v1/sites/{site}/links/{code}"): (KEY, (*AUTH, *SITE)),
    ("post", "/v1/sites/{site}/audiences"): (KEY, (*BODY, *AUTH, *SITE)),
    ("get", "/v1/sites/{site}/audiences"): (KEY, (*AUTH, *SITE)),
    ("get", "/v1/sites/{site}/audiences/{audience_id}"): (KEY, (*AUTH, *SITE)),
    ("delete", "/v1/sites/{site}/audiences/{audience_id}"): (KEY, (*AUTH, *SITE)),
    ("get", "/v1/sites/{site}/audiences/{audience_id}/members"): (KEY, (*AUTH, *SITE)),
    ("get", "/v1/sites/{site}/audiences/{audience_id}/members/{subject}"): (KEY, (*AUTH, *SITE)),
    ("post", "/v1/sites/{site}/audiences/{audience_id}/match"): (KEY, (*BODY, *AUTH, *SITE)),
    ("get", "/l/{code}"): (PUBLIC, (404,)),
    ("post", "/v1/sites/{site}/consent"): (PUBLIC_KEY_OR_TOKEN, (*BODY, *AUTH, *SITE, 409, 429)),
    ("get", "/v1/sites/{site}/consent/{subject}"): (KEY_OR_TOKEN, (*AUTH, *SITE, 429)),
    ("delete", "/v1/sites/{site}/consent/{subject}"): (KEY_OR_TOKEN, (*AUTH, *SITE, 429)),
    ("get", "/v1/sites/{site}/consent/{subject}/history"): (KEY_OR_TOKEN, (*AUTH, *SITE, 429)),
    ("get", "/.well-known/jwks.json"): (PUBLIC, ()),
    ("head", "/.well-known/jwks.json"): (PUBLIC, ()),
    ("get", "/v1/sites/{site}/policy"): (PUBLIC, SITE),
    ("get", "/v1/sites/{site}/banner.js"): (PUBLIC, SITE),
    ("get", "/v1/sites/{site}/reports/audiences"): (KEY, (*AUTH, *SITE)),
    ("get", "/v1/sites/{site}/reports/consent"): (KEY, (*AUTH, *SITE)),
    ("get", "/v1/sites/{site}/key"): (KEY, (*AUTH, *SITE)),
    ("get", "/.well-known/gpc.json"): (PUBLIC, ()),
    ("get", "/healthz"): (PUBLIC, ()),
    ("get", "/readyz"): (PUBLIC, (503,)),
    ("get", "/p/{site}/pixel.gif"): (PUBLIC, ()),
    ("post", "/p/{site}/collect"): (PUBLIC, ()),
    ("options", "/p/{site}/collect"): (PUBLIC, ()),
}
# What answers without the database; every other operation answers 503 while it is away.
WITHOUT_DATABASE = {
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/.well-known/gpc.json"),
    ("get", "/p/{site}/pixel.gif"),
    ("post", "/p/{site}/collect"),
    ("options", "/p/{site}/collect"),
}
RETRY_AFTER = OpenAPIHeader(
    schema=Schema(type=OpenAPIType.INTEGER, minimum=1),
    description="seconds to wait before trying again",
)


def problem_response(status: int) -> OpenAPIResponse:
    headers = {"Retry-After": RETRY_AFTER} if status in (429, 503) else None
    return OpenAPIResponse(
        description=TITLES.get(status, "Error"),
        headers=headers,  # type: ignore[arg-type]
        content={
            "application/problem+json": OpenAPIMediaType(
                schema=Reference("#/components/schemas/Problem")
            )
        },
    )


def operations(schema: OpenAPI) -> dict[tuple[str, str], Operation]:
    found = {}
    for path, item in (schema.paths or {}).items():
        for method in ("get", "put", "post", "delete", "options", "head", "patch"):
            operation = getattr(item, method, None)
            if operation is not None:
                found[(method, path)] = operation
    return found


def document(schema: OpenAPI) -> None:
    """Security and problem responses for every operation; raises KeyError for an operation
    not listed in OPERATIONS, so a new route cannot ship undocumented."""
    schema.components = schema.components or Components()
    schema.components.schemas = {**(schema.components.schemas or {}), "Problem": PROBLEM}
    schema.components.security_schemes = SECURITY_SCHEMES
    for key, operation in operations(schema).items():
        security, errors = OPERATIONS[key]
        operation.security = security
        responses = {
            code: response
            for code, response in (operation.responses or {}).items()
            if not code.startswith(("4", "5"))  # litestar's generic 400, not our shape
        }
        for code, response in responses.items():
            if isinstance(response, OpenAPIResponse) and code.startswith(("204", "3")):
                response.content = None  # litestar describes an empty body as JSON null
        if key not in WITHOUT_DATABASE:
            errors = (*errors, 503)
        for status in errors:
            responses[str(status)] = problem_response(status)
        operation.responses = responses
