"""Bearer-token check shared by every endpoint that touches models or patient data."""

from __future__ import annotations

import hmac

from fastapi import HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

bearer_scheme = HTTPBearer(auto_error=False, description="The token given to `medplug serve`.")


async def require_token(request: Request) -> None:
    """Reject the request with 401 unless it carries the server's bearer token."""
    expected: str | None = request.app.state.settings.token
    if expected is None:  # --insecure-local: loopback only, no token
        return
    credentials: HTTPAuthorizationCredentials | None = await bearer_scheme(request)
    supplied = credentials.credentials if credentials else ""
    if not hmac.compare_digest(supplied.encode(), expected.encode()):
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="missing or invalid bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )
