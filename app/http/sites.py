"""A site over the admin API: read it, and set who is responsible for its processing."""

from typing import Annotated, Any

import msgspec
from litestar import Request, get, patch
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from sqlalchemy.ext.asyncio import AsyncSession

from app.base.sites import EMAIL, SiteDetails, site_out, update_site
from app.base.tables import Site
from app.http.guards import requires
from app.http.problems import Problem

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Email = Annotated[str, msgspec.Meta(min_length=3, max_length=254, pattern=EMAIL)]
Address = Annotated[str, msgspec.Meta(min_length=1, max_length=500)]
Phone = Annotated[str, msgspec.Meta(min_length=1, max_length=50)]
Homepage = Annotated[str, msgspec.Meta(min_length=8, max_length=2048, pattern="^https?://")]


class ControllerIn(msgspec.Struct, forbid_unknown_fields=True):
    """Any subset of the controller's identity; a field left out keeps its value. The limits
    are the columns'; app.base.sites.check_controller also refuses control characters."""

    controller: Name | msgspec.UnsetType = msgspec.UNSET
    contact_email: Email | msgspec.UnsetType = msgspec.UNSET
    address: Address | msgspec.UnsetType = msgspec.UNSET
    phone: Phone | msgspec.UnsetType = msgspec.UNSET
    homepage: Homepage | msgspec.UnsetType = msgspec.UNSET


@get(
    "/v1/sites/{site:str}",
    dependencies=requires("admin"),
    summary="A site, with its controller",
    description="Admin key.",
)
async def read_site(site_row: NamedDependency[Site]) -> SiteDetails:
    return site_out(site_row)


@patch(
    "/v1/sites/{site:str}",
    dependencies=requires("admin"),
    summary="Set the site's controller",
    description=(
        "Admin key. The organisation responsible for the site's processing, named by its "
        "consent receipts (Kantara `piiControllers`), its notice and access exports. Only the "
        "fields sent change; a field cannot be emptied. Receipts issued before keep what they "
        "said."
    ),
)
async def update_controller(
    site: FromPath[str],
    site_row: NamedDependency[Site],
    data: JSONBody[ControllerIn],
    session: NamedDependency[AsyncSession],
) -> SiteDetails:
    fields = {
        name: value
        for name in ControllerIn.__struct_fields__
        if (value := getattr(data, name)) is not msgspec.UNSET
    }
    try:
        found = await update_site(session, site, fields)
    except ValueError as exc:
        raise Problem(422, str(exc)) from None
    return site_out(found)


class KeyScope(msgspec.Struct):
    scope: str  # admin or read


@get(
    "/v1/sites/{site:str}/key",
    dependencies=requires("read"),
    summary="The scope of the key sent",
    description="A read or admin key of the site: the dashboard shows what it opens.",
)
async def key_scope(request: Request[Any, Any, State], site_row: NamedDependency[Site]) -> KeyScope:
    return KeyScope(request.state.api_key.scope)
