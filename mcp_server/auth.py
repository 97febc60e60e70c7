"""Who is calling, checked the way the ERP checks it.

An ERP API key (``fk_...``) is looked up by its SHA-256 in ``erp.api_key`` (not revoked); an
ERP access token (JWT) is verified with the ERP's secret and refused when its user's tokens
were revoked after it was issued (``erp.token_revocation``). Both with the ERP's own code
(``erp_api.security``; the key lookup is ``erp_api.users.principal_for_api_key``'s), so the roles
are the ERP's roles. The caller keeps the credential: a change goes to the ERP with it, so the
ERP's audit trail names the caller.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Final, Literal

from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken

from erp_api.errors import UnauthenticatedError
from erp_api.security import API_KEY_PREFIX, ISSUER, Principal, Role, TokenService, hash_api_key
from mcp_server.db import ReadOnlyDatabase
from mcp_server.errors import RefusedError

__all__ = ["MAINTENANCE_ROLES", "Caller", "ErpTokenVerifier", "current_caller"]

log = logging.getLogger(__name__)

# The roles the ERP lets open maintenance work orders (erp_api.deps.Maintenance).
MAINTENANCE_ROLES: Final[frozenset[Role]] = frozenset({"admin", "planner", "service"})
ACCOUNTING_ROLES: Final[frozenset[Role]] = frozenset({"admin", "accountant"})  # erp_api.deps.Accounting


@dataclass(frozen=True, slots=True)
class Caller:
    """The ERP principal behind a call, and the credential that proves it (sent on to the ERP)."""

    name: str
    role: Role
    via: Literal["token", "api_key"]
    credential: str

    def erp_headers(self) -> dict[str, str]:
        if self.via == "api_key":
            return {"X-API-Key": self.credential}
        return {"Authorization": f"Bearer {self.credential}"}

    def require(self, roles: frozenset[Role], what: str) -> None:
        if self.role not in roles:
            allowed = ", ".join(sorted(roles))
            raise RefusedError(f"role {self.role!r} may not {what}; allowed: {allowed}")


class ErpTokenVerifier:
    """The SDK's ``TokenVerifier`` for the HTTP transport: an ERP API key or ERP access token."""

    def __init__(self, database: ReadOnlyDatabase, tokens: TokenService | None) -> None:
        self._database = database
        self._tokens = tokens

    async def caller(self, credential: str) -> Caller | None:
        """The caller this credential proves, or None."""
        who: Principal | None
        if credential.startswith(API_KEY_PREFIX):
            async with self._database.read() as conn:
                # erp_api.users.principal_for_api_key's lookup, on this server's dict rows
                cur = await conn.execute(
                    "SELECT name, role FROM erp.api_key WHERE key_hash = %s AND revoked_at IS NULL",
                    (hash_api_key(credential),),
                )
                row = await cur.fetchone()
            who = None if row is None else Principal(name=f"key:{row['name']}", role=row["role"], via="api_key")
        else:
            if self._tokens is None:
                return None  # no JWT secret configured: only API keys are accepted
            try:
                who = self._tokens.decode(credential, "access")
            except UnauthenticatedError as exc:
                log.info("refused a bearer token: %s", exc)
                return None
            if await self._revoked(who):
                return None
        if who is None:
            return None
        return Caller(who.name, who.role, who.via, credential)

    async def _revoked(self, who: Principal) -> bool:
        async with self._database.read() as conn:
            cur = await conn.execute(
                "SELECT extract(epoch FROM after)::float8 AS after FROM erp.token_revocation WHERE username = %s",
                (who.name,),
            )
            row = await cur.fetchone()
        return row is not None and who.issued_at < float(row["after"])

    async def verify_token(self, token: str) -> AccessToken | None:
        caller = await self.caller(token)
        if caller is None:
            return None
        return AccessToken(
            token=token, client_id=caller.name, scopes=[], subject=caller.name,
            claims={"iss": ISSUER, "role": caller.role, "via": caller.via},
        )  # fmt: skip


def current_caller(default: Caller | None) -> Caller:
    """The HTTP request's verified caller, else the stdio session's own (``default``)."""
    token = get_access_token()
    if token is not None and token.claims is not None:
        return Caller(str(token.subject), token.claims["role"], token.claims["via"], token.token)
    if default is None:
        raise RefusedError("no ERP credential: configure an API key (FACTORY_ERP_API_KEY) for this server")
    return default
