"""``GET /directory/search``: mailboxes of the directory by name, for the webmail and clients.

    GET /directory/search?q=lefevre&given=jean&profession=10&specialty=SM26
                         &postcode=75&town=paris&kind=PER&limit=20&cursor=...

``q`` (required) is the start of a family name or of an organisation's name, in any case,
with or without accents; the other parameters narrow it. The answer is
``{"results": [...], "next": cursor or null}``: pass ``cursor=next`` for the following page.
Errors are ``{"error": "..."}`` with a 4xx status.

Access follows the setting ``directory_search_auth`` (see ``directory_access``).
"""

# No "from __future__ import annotations": FastAPI reads the annotations at run time.

from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response

from directory.search import MAX_LIMIT, SearchError, SearchQuery, search
from openmss.auth import Authenticator
from openmss.db.engine import Database
from webmail.api.auth import authenticate

Gate = Callable[[Request], Awaitable[None]]


def directory_access(authenticator: Authenticator, required: bool) -> Gate:
    """What a directory request must show. The national directory is public except red-listed
    mailboxes; an operator usually keeps its own search to authenticated professionals (it
    reveals who has an account here, and the file it serves is a convenient copy to scrape):
    HTTP Basic with one of our accounts (password or app password), as the account API asks,
    unless ``directory_search_auth`` is false."""

    async def gate(request: Request) -> None:
        if required:
            await authenticate(request, authenticator)

    return gate


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def search_router(db: Database, gate: Gate) -> APIRouter:
    router = APIRouter(tags=["directory"])

    @router.get("/directory/search")
    async def directory_search(
        request: Request,
        q: Annotated[str | None, Query(description="start of a family or organisation name")] = None,
        given: Annotated[str | None, Query(description="start of the given name")] = None,
        profession: Annotated[str | None, Query(description="TRE_G15 code, e.g. 10")] = None,
        specialty: Annotated[str | None, Query(description="TRE_R38 code, e.g. SM26")] = None,
        postcode: Annotated[str | None, Query(description="postcode or its start")] = None,
        town: Annotated[str | None, Query(description="start of the town")] = None,
        kind: Annotated[str | None, Query(description="mailbox type: PER, ORG, APP, CAB")] = None,
        limit: Annotated[str | None, Query(description=f"results per page, 1 to {MAX_LIMIT}")] = None,
        cursor: Annotated[str | None, Query(description="the 'next' of the previous page")] = None,
    ) -> Response:
        try:
            await gate(request)
        except HTTPException as exc:
            return _error(exc.status_code, str(exc.detail), exc.headers)
        if not q:
            return _error(400, "q: the start of a name is required")
        try:
            count = int(limit) if limit is not None else 20
        except ValueError:
            return _error(400, f"limit: a number between 1 and {MAX_LIMIT}")
        query = SearchQuery(
            q=q,
            given=given,
            profession=profession or None,
            specialty=specialty or None,
            postcode=postcode or None,
            town=town or None,
            kind=kind.upper() if kind else None,
            limit=count,
            cursor=cursor or None,
        )
        try:
            async with db.reads() as reads:
                page = await search(reads, query)
        except SearchError as exc:
            return _error(400, str(exc))
        body: dict[str, Any] = {"results": page.results, "next": page.next_cursor}
        return JSONResponse(body)

    return router
