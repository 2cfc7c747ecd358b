"""Bearer-token authentication: HS256 with a shared secret, or RS256/ES256 keys from a JWKS URL."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import jwt
from cachetools import TTLCache

from policies.principal import Principal

from .settings import Settings, SettingsError


class AuthError(Exception):
    """The caller's token is missing or not acceptable. The message is safe to show to the caller."""


class _KeySet(jwt.PyJWKClient):
    """The JWKS, fetched with a short timeout; after a failed fetch, none again for a while.

    Fetching blocks the request that needs it, so an unreachable JWKS must not be asked again by
    every token that arrives (PyJWT already refetches for an unknown ``kid`` at most every 30 s).
    """

    retry_after_failure = 10.0  # seconds

    def __init__(self, url: str) -> None:
        super().__init__(url, cache_keys=True, timeout=3.0)
        self._failed_at: float | None = None

    def fetch_data(self) -> Any:
        now = time.monotonic()
        if self._failed_at is not None and now - self._failed_at < self.retry_after_failure:
            raise jwt.PyJWKClientConnectionError("the JWKS was unreachable moments ago")
        try:
            data = super().fetch_data()
        except jwt.PyJWKClientError:
            self._failed_at = now
            raise
        self._failed_at = None
        return data


_ASYMMETRIC = ["RS256", "ES256"]
LEEWAY = 5  # seconds of clock skew accepted on exp / nbf / iat
# A verified token's principal is kept this long (and never past the token's expiry), so an app
# sending the same token on every request pays the signature check once a minute, not each time.
# The price: a signing key removed from the JWKS still admits tokens verified in the last minute.
VERIFIED_TTL = 60.0
VERIFIED_MAX = 4096


class Authenticator:
    """Turns an ``Authorization`` header into a :class:`Principal`, or raises :class:`AuthError`."""

    def __init__(self, settings: Settings) -> None:
        self._secret = settings.jwt_secret
        self._jwks = _KeySet(settings.jwt_jwks_url) if settings.jwt_jwks_url else None
        if not self._secret and self._jwks is None:
            raise SettingsError("set CG_JWT_SECRET (HS256) or CG_JWT_JWKS_URL (RS256/ES256) to accept tokens")
        self._audience = settings.jwt_audience or None
        self._issuer = settings.jwt_issuer or None
        self._verified: TTLCache[str, tuple[Principal, float]] = TTLCache(VERIFIED_MAX, VERIFIED_TTL)

    def authenticate(self, authorization: str | None) -> Principal | None:
        """``None`` when no token was sent; a principal for a valid token; AuthError otherwise."""
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError("the Authorization header must be 'Bearer <token>'")
        return self.decode(token.strip())

    def decode(self, token: str) -> Principal:
        """The principal of a valid token (verified at most once a minute); AuthError otherwise."""
        hit = self._verified.get(token)
        if hit is not None:
            principal, expires = hit
            if time.time() < expires + LEEWAY:
                return principal
            self._verified.pop(token, None)
        principal, claims = self._verify(token)
        expires = claims["exp"]
        if isinstance(expires, int | float):
            self._verified[token] = (principal, float(expires))
        return principal

    def _verify(self, token: str) -> tuple[Principal, dict[str, Any]]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthError("the token is not a well-formed JWT") from None
        alg = header.get("alg")
        key: object
        if alg == "HS256" and self._secret:
            key, algorithms = self._secret, ["HS256"]
        elif alg in _ASYMMETRIC and self._jwks is not None:
            try:
                signing_key = self._jwks.get_signing_key_from_jwt(token)
            except jwt.PyJWTError:
                raise AuthError("the token's signing key is not known") from None
            if signing_key.algorithm_name != alg:  # an RSA key never verifies an ES256 token, and so on
                raise AuthError("the token's algorithm does not match its signing key")
            key, algorithms = signing_key.key, [alg]
        else:
            raise AuthError("the token's algorithm is not accepted")
        try:
            claims = jwt.decode(
                token,
                key=key,  # type: ignore[arg-type]
                algorithms=algorithms,
                audience=self._audience,
                issuer=self._issuer,
                options={"require": ["sub", "exp"], "verify_aud": self._audience is not None},
                leeway=LEEWAY,
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise AuthError("the token is not valid yet") from None
        except jwt.InvalidAudienceError:
            raise AuthError("the token is for another audience") from None
        except jwt.InvalidIssuerError:
            raise AuthError("the token is from another issuer") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(f"the token lacks the {exc.claim!r} claim") from None
        except jwt.PyJWTError:
            raise AuthError("the token's signature or claims are invalid") from None
        return _principal(claims), claims


def _principal(claims: dict[str, object]) -> Principal:
    try:
        return Principal.from_claims(claims)
    except ValueError as exc:
        raise AuthError(f"the token's claims are not usable: {exc}") from None


DEV_TOKEN_HOURS = 12.0  # the lifetime of dev tokens (customer-graph token, the demo's printed ones)


def issue_token(
    secret: str,
    *,
    sub: str,
    roles: Iterable[str],
    region: str | None = None,
    name: str | None = None,
    ttl_seconds: int = 12 * 3600,
    audience: str | None = None,
    issuer: str | None = None,
) -> str:
    """A dev token signed with the configured HS256 secret (``customer-graph token``)."""
    now = int(time.time())
    claims: dict[str, object] = {
        "sub": sub,
        "roles": sorted(set(roles)),
        "iat": now,
        "exp": now + ttl_seconds,
    }
    if region:
        claims["region"] = region
    if name:
        claims["name"] = name
    if audience:
        claims["aud"] = audience
    if issuer:
        claims["iss"] = issuer
    return jwt.encode(claims, secret, algorithm="HS256")
