"""JWT edge cases: every token that is not exactly right is UNAUTHENTICATED, and none is accepted."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from gateway.auth import Authenticator, AuthError
from gateway.settings import Settings

from .gateway_client import SECRET, codes, gateway

AUDIENCE = "customer-graph"
ISSUER = "https://idp.example.test"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
RSA_PUBLIC_PEM = RSA_KEY.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "sub": "u-1021",
        "roles": ["sales_rep"],
        "iat": now,
        "exp": now + 600,
        "aud": AUDIENCE,
        "iss": ISSUER,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def hs256(payload: dict[str, Any], secret: str = SECRET, **header: Any) -> str:
    return jwt.encode(payload, secret, algorithm="HS256", headers=header or None)


def raw_token(
    header: dict[str, Any], payload: dict[str, Any], key: bytes | None, digest: Any = hashlib.sha256
) -> str:
    """A token built by hand: any header, any HMAC key (even a public key's PEM), or no signature."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    if key is None:
        return signing_input + "."
    signature = hmac.new(key, signing_input.encode(), digest).digest()
    return f"{signing_input}.{b64(signature)}"


# --- a JWKS endpoint on this machine -----------------------------------------------------------


class JWKS:
    def __init__(self) -> None:
        rsa_jwk = RSAAlgorithm.to_jwk(RSA_KEY.public_key(), as_dict=True)
        ec_jwk = ECAlgorithm.to_jwk(EC_KEY.public_key(), as_dict=True)
        self.document = {
            "keys": [{**rsa_jwk, "kid": "rsa-1", "use": "sig"}, {**ec_jwk, "kid": "ec-1", "use": "sig"}]
        }
        self.hits = 0
        self.down = False


@pytest.fixture(scope="module")
def jwks() -> Iterator[tuple[str, JWKS]]:
    state = JWKS()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.hits += 1
            if state.down:
                self.send_response(503)
                self.end_headers()
                return
            body = json.dumps(state.document).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json", state
    finally:
        server.shutdown()
        server.server_close()


def authenticator(jwks_url: str = "", secret: str = SECRET) -> Authenticator:
    return Authenticator(
        Settings(jwt_secret=secret, jwt_jwks_url=jwks_url, jwt_audience=AUDIENCE, jwt_issuer=ISSUER)
    )


def refused(auth: Authenticator, token: str) -> str:
    with pytest.raises(AuthError) as caught:
        auth.authenticate(f"Bearer {token}")
    return str(caught.value)


# --- HS256 -------------------------------------------------------------------------------------


def test_a_valid_token_is_accepted() -> None:
    principal = authenticator().authenticate(f"Bearer {hs256(claims(region='east'))}")
    assert principal is not None and principal.sub == "u-1021" and principal.region == "east"


@pytest.mark.parametrize(
    ("token", "why"),
    [
        (hs256(claims(exp=int(time.time()) - 60)), "expired"),
        (hs256(claims(nbf=int(time.time()) + 600)), "not valid yet"),
        (hs256(claims(iat=int(time.time()) + 600)), "not valid yet"),
        (hs256(claims(iss="https://evil.example.test")), "another issuer"),
        (hs256(claims(iss=None)), "'iss'"),
        (hs256(claims(aud="another-app")), "another audience"),
        (hs256(claims(aud=None)), "'aud'"),
        (hs256(claims(sub=None)), "'sub'"),
        (hs256(claims(exp=None)), "'exp'"),
        (hs256(claims(sub=1021)), "invalid"),
        (hs256(claims(sub="")), "claims"),
        (hs256(claims(exp="tomorrow")), "invalid"),
        (hs256(claims(), secret="another-secret-entirely-0123456789"), "signature"),
        (hs256(claims(), crit=["exp"]), "well-formed"),
        (raw_token({"alg": "none", "typ": "JWT"}, claims(), None), "algorithm is not accepted"),
        (raw_token({"alg": "None"}, claims(), None), "algorithm is not accepted"),
        (raw_token({"alg": "NONE"}, claims(), None), "algorithm is not accepted"),
        (raw_token({"alg": ""}, claims(), None), "algorithm is not accepted"),
        (raw_token({"typ": "JWT"}, claims(), SECRET.encode()), "algorithm is not accepted"),
        (raw_token({"alg": "HS512"}, claims(), SECRET.encode(), hashlib.sha512), "algorithm is not accepted"),
        (raw_token({"alg": "HS384"}, claims(), SECRET.encode(), hashlib.sha384), "algorithm is not accepted"),
        (raw_token({"alg": "hs256"}, claims(), SECRET.encode()), "algorithm is not accepted"),
        ("not-a-jwt", "well-formed"),
        ("a.b", "well-formed"),
        ("a.b.c", "well-formed"),
        ("eyJhbGciOiJIUzI1NiJ9.%%%.abc", "well-formed"),
        (b64(b"[1,2]") + "." + b64(b"{}") + ".x", "well-formed"),
    ],
)
def test_bad_hs256_tokens_are_refused(token: str, why: str) -> None:
    assert why in refused(authenticator(), token)


def test_a_tampered_payload_is_refused() -> None:
    header, _, signature = hs256(claims()).split(".")
    forged = b64(json.dumps(claims(roles=["executive"])).encode())
    assert "signature" in refused(authenticator(), f"{header}.{forged}.{signature}")


@pytest.mark.parametrize(
    "header", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer    ", "Token abc", "bearer-token"]
)
def test_other_authorization_schemes_are_refused(header: str) -> None:
    with pytest.raises(AuthError, match="Bearer"):
        authenticator().authenticate(header)


def test_a_few_seconds_of_clock_skew_are_tolerated() -> None:
    token = hs256(claims(nbf=int(time.time()) + 2))
    assert authenticator().authenticate(f"Bearer {token}") is not None


def test_a_verified_token_is_remembered_but_never_past_its_expiry(monkeypatch: pytest.MonkeyPatch) -> None:
    auth = authenticator()
    verifications: list[str] = []
    verify = auth._verify

    def counting(token: str) -> Any:
        verifications.append(token)
        return verify(token)

    monkeypatch.setattr(auth, "_verify", counting)
    expires = int(time.time()) + 30
    token = hs256(claims(exp=expires))
    for _ in range(3):
        assert auth.authenticate(f"Bearer {token}") is not None
    assert len(verifications) == 1  # the signature is checked once, not per request
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    assert "signature" in refused(auth, tampered)  # another token string: checked in full
    later = expires + 10  # past exp and the clock-skew leeway
    monkeypatch.setattr("gateway.auth.time.time", lambda: float(later))
    monkeypatch.setattr("jwt.api_jwt.datetime", _FrozenDatetime(later), raising=False)
    assert "expired" in refused(auth, token)


class _FrozenDatetime:
    """``jwt.api_jwt``'s clock, stopped at ``at`` (seconds since the epoch)."""

    def __init__(self, at: int) -> None:
        import datetime as dt

        self._real = dt.datetime
        self._at = at

    def now(self, tz: Any = None) -> Any:
        return self._real.fromtimestamp(self._at, tz)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


# --- RS256 / ES256 through a JWKS ---------------------------------------------------------------


def rs256(
    payload: dict[str, Any], key: Any = RSA_KEY, kid: str = "rsa-1", alg: str = "RS256", **header: Any
) -> str:
    return jwt.encode(payload, key, algorithm=alg, headers={"kid": kid, **header})


def test_rs256_and_es256_tokens_from_the_jwks_are_accepted(jwks: tuple[str, JWKS]) -> None:
    url, _ = jwks
    auth = authenticator(url, secret="")
    assert auth.authenticate(f"Bearer {rs256(claims())}") is not None
    assert auth.authenticate(f"Bearer {rs256(claims(), EC_KEY, 'ec-1', 'ES256')}") is not None


def test_hs_rs_confusion_is_refused(jwks: tuple[str, JWKS]) -> None:
    """An HS256 token 'signed' with the RSA public key (which anybody may know) as the HMAC secret."""
    url, _ = jwks
    token = raw_token({"alg": "HS256", "kid": "rsa-1"}, claims(), RSA_PUBLIC_PEM)
    assert "algorithm is not accepted" in refused(authenticator(url, secret=""), token)
    assert "signature" in refused(authenticator(url), token)  # with a secret too: it is not the secret


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (lambda: rs256(claims(), OTHER_RSA_KEY), "signature"),  # right kid, wrong key
        (lambda: rs256(claims(), EC_KEY, "rsa-1", "ES256"), "does not match"),  # an EC token on an RSA key
        (lambda: rs256(claims(), RSA_KEY, "ec-1"), "does not match"),  # an RSA token on an EC key
        (lambda: rs256(claims(), RSA_KEY, alg="RS512"), "algorithm is not accepted"),
        (lambda: rs256(claims(), RSA_KEY, alg="PS256"), "algorithm is not accepted"),
        (lambda: rs256(claims(exp=int(time.time()) - 60)), "expired"),
        (lambda: rs256(claims(aud="another-app")), "another audience"),
        (lambda: rs256(claims(), OTHER_RSA_KEY, "rsa-unknown"), "not known"),
        (  # a key of the attacker's own, offered in the header: never used
            lambda: rs256(
                claims(),
                OTHER_RSA_KEY,
                "rsa-1",
                jwk=RSAAlgorithm.to_jwk(OTHER_RSA_KEY.public_key(), as_dict=True),
                jku="http://127.0.0.1:9/attacker.json",
            ),
            "signature",
        ),
    ],
)
def test_bad_jwks_tokens_are_refused(jwks: tuple[str, JWKS], make: Any, why: str) -> None:
    url, _ = jwks
    assert why in refused(authenticator(url, secret=""), make())


def test_random_key_ids_do_not_make_the_gateway_fetch_the_jwks_each_time(jwks: tuple[str, JWKS]) -> None:
    url, state = jwks
    auth = authenticator(url, secret="")
    auth.authenticate(f"Bearer {rs256(claims())}")
    before = state.hits
    for n in range(20):
        refused(auth, rs256(claims(), OTHER_RSA_KEY, f"random-{n}"))
    assert state.hits - before <= 1


def test_an_unreachable_jwks_is_not_asked_by_every_token(jwks: tuple[str, JWKS]) -> None:
    url, state = jwks
    state.down = True
    try:
        auth = authenticator(url, secret="")
        before = state.hits
        for _ in range(10):
            assert "not known" in refused(auth, rs256(claims()))
        assert state.hits - before == 1
    finally:
        state.down = False


# --- through HTTP ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "token",
    [
        hs256(claims(exp=int(time.time()) - 60)),
        hs256(claims(nbf=int(time.time()) + 600)),
        hs256(claims(aud="another-app")),
        hs256(claims(iss="https://evil.example.test")),
        hs256(claims(sub=None)),
        raw_token({"alg": "none"}, claims(), None),
        raw_token({"alg": "HS256"}, claims(), RSA_PUBLIC_PEM),
        "garbage",
    ],
)
async def test_over_http_every_bad_token_is_unauthenticated(token: str) -> None:
    env = {"CG_JWT_AUDIENCE": AUDIENCE, "CG_JWT_ISSUER": ISSUER}
    async with gateway(env) as client:
        response = await client.post(
            "/graphql",
            json={"query": "{ viewer { id roles } }"},
            headers={"Authorization": f"Bearer {token}"},
        )
        probe = await client.post(
            "/graphql", json={"query": "{ __typename }"}, headers={"Authorization": f"Bearer {token}"}
        )
        good = await client.post(
            "/graphql",
            json={"query": "{ viewer { id } }"},
            headers={"Authorization": f"Bearer {hs256(claims())}"},
        )
    assert response.status_code == 200
    body = response.json()
    assert body["data"] is None
    assert codes(body) == ["UNAUTHENTICATED"]
    assert token not in response.text
    assert probe.json() == {"data": {"__typename": "Query"}}  # introspection needs no token
    assert good.json() == {"data": {"viewer": {"id": "u-1021"}}}
