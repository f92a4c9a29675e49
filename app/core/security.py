"""Bearer-key checks: admin endpoints always, search only with TUWEN_REQUIRE_KEY_FOR_SEARCH=1."""

from __future__ import annotations

import secrets

from fastapi import HTTPException
from fastapi.security import HTTPAuthorizationCredentials

from common.settings import Settings

ADMIN_SCHEME, SEARCH_SCHEME = "AdminKey", "SearchKey"  # OpenAPI security scheme names
ADMIN_OFF = "admin endpoints are off: set TUWEN_API_KEY on the server to enable them"


def _check_bearer(credentials: HTTPAuthorizationCredentials | None, key: str) -> None:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(
            status_code=401,
            detail="missing API key: send the header Authorization: Bearer <TUWEN_API_KEY>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    # constant-time comparison: the response time must not reveal how much of the key matched
    if not secrets.compare_digest(credentials.credentials.encode(), key.encode()):
        raise HTTPException(status_code=401, detail="wrong API key", headers={"WWW-Authenticate": "Bearer"})


def check_admin(settings: Settings, credentials: HTTPAuthorizationCredentials | None) -> None:
    if not settings.api_key:
        raise HTTPException(status_code=403, detail=ADMIN_OFF)
    _check_bearer(credentials, settings.api_key)


def check_search(settings: Settings, credentials: HTTPAuthorizationCredentials | None) -> None:
    if settings.require_key_for_search:
        if not settings.api_key:  # refused at start-up too; never serve "open" by mistake
            raise HTTPException(status_code=403, detail="search requires a key but TUWEN_API_KEY is not set")
        _check_bearer(credentials, settings.api_key)


def document_search_key(schema: dict, settings: Settings) -> dict:
    """Mark the search key optional in an OpenAPI ``schema`` unless the server requires it."""
    if not settings.require_key_for_search:
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                security = operation.get("security", [])
                if {SEARCH_SCHEME: []} in security and {} not in security:
                    security.append({})  # OpenAPI: {} is "no credentials" as an alternative
    return schema
