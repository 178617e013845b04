"""Bearer-token authentication (signed JWT) and the principal every RPC runs as.

Tokens carry the principal (`sub`), the role and the tenant (`operator:<id>`, `fleet:<id>`, or empty for the
platform admin). Which role may call which RPC lives in `permissions.py`; which rows a tenant may see is
decided by the domain code through `Principal.require_tenant`.
"""

from __future__ import annotations

import datetime as dt
import enum
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import jwt

from voltcloud.platform.errors import InvalidArgument, PermissionDenied, Unauthenticated

_ALGORITHM = "HS256"
_DEV_KEY_FILE = "dev-jwt.key"
VERIFIED_TOKENS_KEPT = 50_000  # ~10 MB at most; beyond it the oldest verified token is checked again


class Role(enum.IntEnum):
    """Same numbers as `voltcloud.v1.Role`."""

    PLATFORM_ADMIN = 1
    OPERATOR = 2
    FLEET_MANAGER = 3
    DRIVER = 4
    SPECIALIST = 5
    ENGINEER = 6
    GATEWAY = 7

    @classmethod
    def parse(cls, text: str) -> Role:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            names = ", ".join(r.name.lower() for r in cls)
            raise InvalidArgument.for_field("role", f"unknown role {text!r}; one of {names}") from None


@dataclass(frozen=True)
class Tenant:
    kind: str  # "operator" | "fleet"
    id: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.id}"

    @classmethod
    def parse(cls, text: str) -> Tenant | None:
        if not text:
            return None
        kind, sep, ident = text.partition(":")
        if not sep or kind not in ("operator", "fleet") or not ident:
            raise InvalidArgument.for_field("tenant", f"must be operator:<id> or fleet:<id>, got {text!r}")
        return cls(kind, ident)


@dataclass(frozen=True)
class Principal:
    subject: str
    role: Role
    tenant: Tenant | None

    @property
    def is_admin(self) -> bool:
        return self.role is Role.PLATFORM_ADMIN

    def require_tenant(self, kind: str, tenant_id: str) -> None:
        """Refuses access to another tenant's data; the platform admin sees all."""
        if self.is_admin:
            return
        if self.tenant is None or self.tenant.kind != kind or self.tenant.id != tenant_id:
            raise PermissionDenied(f"{self.subject} may not access {kind} {tenant_id}")


class TokenService:
    def __init__(self, key: str, issuer: str, ttl: dt.timedelta) -> None:
        if len(key) < 32:
            raise ValueError("the JWT key must be at least 32 characters")
        self._key = key
        self._issuer = issuer
        self._ttl = ttl
        # Verified tokens: a signature check costs ~0.2 ms, a tenth of a whole quote. Only tokens that passed
        # it are kept (random tokens cannot fill the cache), each until its own expiry.
        self._verified: dict[str, tuple[Principal, int]] = {}
        self.clock: Callable[[], float] = time.time

    def mint(
        self,
        subject: str,
        role: Role,
        tenant: Tenant | None = None,
        *,
        now: dt.datetime | None = None,
        ttl: dt.timedelta | None = None,
    ) -> str:
        if role is not Role.PLATFORM_ADMIN and tenant is None and role is not Role.DRIVER:
            raise InvalidArgument.for_field("tenant", f"role {role.name.lower()} needs a tenant")
        issued = now or dt.datetime.now(dt.UTC)
        claims = {
            "sub": subject,
            "role": role.name.lower(),
            "tenant": str(tenant) if tenant else "",
            "iss": self._issuer,
            "iat": int(issued.timestamp()),
            "exp": int((issued + (ttl or self._ttl)).timestamp()),
        }
        return jwt.encode(claims, self._key, algorithm=_ALGORITHM)

    def verify(self, token: str) -> Principal:
        known = self._verified.get(token)
        if known is not None:
            if self.clock() < known[1]:
                return known[0]
            del self._verified[token]
            raise Unauthenticated("token expired")
        principal, expires = self._verify_signed(token)
        if len(self._verified) >= VERIFIED_TOKENS_KEPT:
            del self._verified[next(iter(self._verified))]  # the oldest entry
        self._verified[token] = (principal, expires)
        return principal

    def _verify_signed(self, token: str) -> tuple[Principal, int]:
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[_ALGORITHM],
                issuer=self._issuer,
                options={"require": ["sub", "role", "exp", "iss"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("token expired") from None
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated(f"invalid token: {exc}") from None
        try:
            role = Role.parse(str(claims["role"]))
            tenant = Tenant.parse(str(claims.get("tenant", "")))
        except InvalidArgument as exc:
            raise Unauthenticated(f"invalid token claims: {exc.message}") from None
        return Principal(subject=str(claims["sub"]), role=role, tenant=tenant), int(claims["exp"])

    def authenticate(self, authorization: str | None) -> Principal:
        """The principal for an `authorization` metadata value (`Bearer <jwt>`)."""
        if not authorization:
            raise Unauthenticated("missing bearer token: send metadata 'authorization: Bearer <token>'")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("authorization metadata must be 'Bearer <token>'")
        return self.verify(token.strip())


def load_or_create_dev_key(data_dir: Path) -> str:
    """The dev signing key in the data directory, created (owner-only) on first start."""
    path = data_dir / _DEV_KEY_FILE
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    path.touch(mode=0o600)
    path.write_text(key + "\n")
    return key
