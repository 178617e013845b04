import datetime as dt
from pathlib import Path

import jwt
import pytest

from voltcloud.platform.auth import Principal, Role, Tenant, TokenService, load_or_create_dev_key
from voltcloud.platform.errors import InvalidArgument, PermissionDenied, Unauthenticated

KEY = "unit-test-key-0123456789abcdef0123456789abcdef"


@pytest.fixture
def tokens() -> TokenService:
    return TokenService(KEY, "voltcloud", dt.timedelta(hours=1))


def test_round_trip_keeps_subject_role_and_tenant(tokens: TokenService) -> None:
    token = tokens.mint("alice", Role.OPERATOR, Tenant("operator", "op-01"))
    principal = tokens.authenticate(f"Bearer {token}")
    assert principal == Principal("alice", Role.OPERATOR, Tenant("operator", "op-01"))


def test_expired_token_is_unauthenticated(tokens: TokenService) -> None:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
    token = tokens.mint("bob", Role.DRIVER, now=past)
    with pytest.raises(Unauthenticated, match="expired"):
        tokens.verify(token)


def test_token_signed_with_another_key_is_unauthenticated(tokens: TokenService) -> None:
    forged = TokenService("another-key-0123456789abcdef0123456789abcdef", "voltcloud", dt.timedelta(hours=1))
    with pytest.raises(Unauthenticated, match="invalid token"):
        tokens.verify(forged.mint("mallory", Role.PLATFORM_ADMIN))


def test_token_with_unknown_role_is_unauthenticated(tokens: TokenService) -> None:
    claims = {"sub": "x", "role": "root", "iss": "voltcloud", "exp": 4_000_000_000}
    with pytest.raises(Unauthenticated, match="claims"):
        tokens.verify(jwt.encode(claims, KEY, algorithm="HS256"))


@pytest.mark.parametrize("header", [None, "", "Basic abc", "Bearer ", "Bearer not-a-jwt"])
def test_malformed_authorization_is_unauthenticated(tokens: TokenService, header: str | None) -> None:
    with pytest.raises(Unauthenticated):
        tokens.authenticate(header)


def test_tenant_scoping() -> None:
    operator = Principal("o", Role.OPERATOR, Tenant("operator", "op-01"))
    operator.require_tenant("operator", "op-01")
    with pytest.raises(PermissionDenied):
        operator.require_tenant("operator", "op-02")
    with pytest.raises(PermissionDenied):
        operator.require_tenant("fleet", "op-01")
    Principal("a", Role.PLATFORM_ADMIN, None).require_tenant("fleet", "anything")


def test_roles_other_than_admin_and_driver_need_a_tenant(tokens: TokenService) -> None:
    with pytest.raises(InvalidArgument, match="tenant"):
        tokens.mint("x", Role.OPERATOR)
    with pytest.raises(InvalidArgument, match="role"):
        Role.parse("superuser")


def test_dev_key_is_created_once_and_private(tmp_path: Path) -> None:
    key = load_or_create_dev_key(tmp_path)
    assert len(key) >= 32
    assert load_or_create_dev_key(tmp_path) == key
    assert (tmp_path / "dev-jwt.key").stat().st_mode & 0o077 == 0


def test_a_verified_token_is_served_from_the_cache_only_until_it_expires(tokens: TokenService) -> None:
    issued = dt.datetime.now(dt.UTC)
    token = tokens.mint("drv-1", Role.DRIVER, now=issued, ttl=dt.timedelta(seconds=60))
    assert tokens.verify(token).subject == "drv-1"
    tokens.clock = lambda: issued.timestamp() + 59  # still valid: answered from the cache
    assert tokens.verify(token).subject == "drv-1"
    tokens.clock = lambda: issued.timestamp() + 61  # expired while cached: refused all the same
    with pytest.raises(Unauthenticated, match="expired"):
        tokens.verify(token)


def test_a_token_that_failed_verification_is_never_cached(tokens: TokenService) -> None:
    forged = TokenService("another-key-0123456789abcdef0123456789", "voltcloud", dt.timedelta(hours=1))
    token = forged.mint("drv-1", Role.DRIVER)
    for _ in range(2):
        with pytest.raises(Unauthenticated, match="invalid token"):
            tokens.verify(token)
