"""The account API: a user manages their keys and app passwords and reads their mail.

    GET    /api/v1/account                          the account, its key and app passwords
    PUT    /api/v1/account/key                      upload a public key: mail is then encrypted
                                                    to it and the secret key stays with the user
    POST   /api/v1/account/key/server               back to a key held by the server
    PUT    /api/v1/account/signing                  {"enabled": bool}: sign outgoing mail
    POST   /api/v1/account/password                 {"current": ..., "new": ...}
    GET    /api/v1/account/app-passwords
    POST   /api/v1/account/app-passwords            {"label": ...} -> the app password, once
    DELETE /api/v1/account/app-passwords/{id}
    GET    /api/v1/mailboxes/{name}/messages        list (UID, size, date, flags)
    GET    /api/v1/mailboxes/{name}/messages/{uid}  the message, decrypted (message/rfc822)

Managing credentials and keys needs the account password; an app password only reads mail.
Every read of a mailbox or a message is recorded in the audit trail.
"""

# No "from __future__ import annotations": FastAPI reads these annotations at run time, and
# the dependency aliases below are local to account_router().

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from mailserver.store.mailstore import MailStore, NoSuchMailbox
from mailserver.store.reader import MessageReader, UnreadableMessage
from openmss import audit
from openmss.accounts import AccountError, Accounts
from openmss.auth import Authenticator
from openmss.db.commit import GroupCommitter
from openmss.db.engine import Database
from openmss.keyring.store import Locked
from webmail.api.auth import Caller, authenticate

MAX_KEY_BYTES = 1 << 20


@dataclass(frozen=True)
class AccountApiDeps:
    db: Database
    store: MailStore
    accounts: Accounts
    authenticator: Authenticator
    committer: GroupCommitter


class SigningRequest(BaseModel):
    enabled: bool


class PasswordChange(BaseModel):
    current: str = Field(min_length=1, max_length=1024)
    new: str = Field(min_length=8, max_length=1024)


class AppPasswordRequest(BaseModel):
    label: str = Field(min_length=1, max_length=100)


def account_router(deps: AccountApiDeps) -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["account"])

    async def caller(request: Request) -> Caller:
        return await authenticate(request, deps.authenticator)

    CallerDep = Annotated[Caller, Depends(caller)]

    def main_password(who: Caller) -> None:
        if not who.with_main_password:
            raise HTTPException(403, "this needs the account password, not an app password")

    async def record(who: Caller, action: str, target: str = "", **detail: Any) -> None:
        def work(session: Session) -> None:
            audit.record(
                session,
                actor=who.address,
                action=action,
                target=target or who.address,
                peer=who.peer,
                **detail,
            )

        await deps.committer.run(work)

    async def reader(who: Caller) -> MessageReader:
        try:
            chain = await deps.accounts.unlock(who.account_id, who.password, who.app_password_id)
        except Locked:
            raise HTTPException(403, "this credential does not unlock the account's keys") from None
        return MessageReader(deps.store, chain)

    @router.get("/account")
    async def account(who: CallerDep) -> dict[str, Any]:
        async with deps.db.read() as session:
            key = await deps.accounts.keyring.current_key(session, who.account_id)
            apps = await deps.accounts.keyring.app_passwords(session, who.account_id)
        return {
            "address": who.address,
            "key": None
            if key is None
            else {"fingerprint": key.fingerprint, "mode": key.mode, "sign_outgoing": key.sign_outgoing},
            "app_passwords": [_app(a) for a in apps],
        }

    @router.put("/account/key")
    async def upload_key(request: Request, who: CallerDep) -> dict[str, Any]:
        main_password(who)
        body = await request.body()
        if not body or len(body) > MAX_KEY_BYTES:
            raise HTTPException(400, "send one OpenPGP public key (armoured or binary), at most 1 MiB")
        try:
            fingerprint = await deps.accounts.set_own_key(who.address, body, actor=who.address)
        except (AccountError, ValueError) as exc:
            raise HTTPException(400, str(exc)) from None
        return {"fingerprint": fingerprint, "mode": "own"}

    @router.post("/account/key/server")
    async def server_key(who: CallerDep) -> dict[str, Any]:
        main_password(who)
        try:
            fingerprint = await deps.accounts.new_server_key(who.address, who.password, actor=who.address)
        except Locked:
            raise HTTPException(403, "the password does not unlock the account's keys") from None
        return {"fingerprint": fingerprint, "mode": "server"}

    @router.put("/account/signing")
    async def signing(request: SigningRequest, who: CallerDep) -> dict[str, Any]:
        main_password(who)
        try:
            await deps.accounts.set_sign_outgoing(who.address, request.enabled, actor=who.address)
        except AccountError as exc:
            raise HTTPException(409, str(exc)) from None
        return {"sign_outgoing": request.enabled}

    @router.post("/account/password", status_code=204)
    async def change_password(request: PasswordChange, who: CallerDep) -> Response:
        main_password(who)
        try:
            await deps.accounts.change_password(who.address, request.current, request.new, actor=who.address)
        except Locked:
            raise HTTPException(403, "the current password is wrong") from None
        return Response(status_code=204)

    @router.get("/account/app-passwords")
    async def list_app_passwords(who: CallerDep) -> list[dict[str, Any]]:
        async with deps.db.read() as session:
            return [_app(a) for a in await deps.accounts.keyring.app_passwords(session, who.account_id)]

    @router.post("/account/app-passwords", status_code=201)
    async def create_app_password(request: AppPasswordRequest, who: CallerDep) -> dict[str, Any]:
        main_password(who)
        created = await deps.accounts.create_app_password(
            who.address, who.password, request.label, actor=who.address
        )
        return {"id": created.id, "label": created.label, "password": created.password}

    @router.delete("/account/app-passwords/{app_password_id}", status_code=204)
    async def revoke_app_password(app_password_id: int, who: CallerDep) -> Response:
        main_password(who)
        if not await deps.accounts.revoke_app_password(who.address, app_password_id, actor=who.address):
            raise HTTPException(404, "no such app password")
        return Response(status_code=204)

    @router.get("/mailboxes/{name}/messages")
    async def list_messages(name: str, who: CallerDep) -> list[dict[str, Any]]:
        async with deps.db.read() as session:
            try:
                box = await deps.store.mailbox(session, who.account_id, name)
            except NoSuchMailbox:
                raise HTTPException(404, "no such mailbox") from None
            messages = await deps.store.messages(session, box.id)
        await record(who, "mailbox.list", f"{who.address}/{box.name}")
        return [
            {
                "uid": m.uid,
                "size": m.size,
                "internal_date": m.internal_date.isoformat(),
                "flags": list(m.flags),
            }
            for m in messages
        ]

    @router.get("/mailboxes/{name}/messages/{uid}")
    async def read_message(name: str, uid: int, who: CallerDep) -> Response:
        opened = await reader(who)
        async with deps.db.read() as session:
            try:
                box = await deps.store.mailbox(session, who.account_id, name)
            except NoSuchMailbox:
                raise HTTPException(404, "no such mailbox") from None
            message = await deps.store.message_by_uid(session, box.id, uid)
            if message is None:
                raise HTTPException(404, "no such message")
            try:
                content = await opened.read(session, message)
            except UnreadableMessage:
                raise HTTPException(409, "this message does not open with the account's keys") from None
        await record(who, "message.read", f"{who.address}/{box.name}/{uid}")
        return Response(content, media_type="message/rfc822", headers={"Cache-Control": "no-store"})

    return router


def _app(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "label": row.label,
        "created_at": row.created_at.isoformat(),
        "last_used_at": row.last_used_at.isoformat() if row.last_used_at else None,
    }
