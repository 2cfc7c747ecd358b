"""Documents built to make validation or the document cache expensive are refused before they cost.

The outside review: ``{ viewer { id } viewer { id } … ×1249 }`` took ~1 s to validate (graphql-core's
overlapping-fields rule is quadratic), with or without a token, and a varied comment defeated the
cache; unique 15 KB documents grew the process by ~3 MB each.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import strawberry.schema.schema as strawberry_schema

from demo.servers import DemoSystems

from .test_request_limits import auth, client_for

ATTACK = "{" + " viewer { id }" * 1249 + "}"


@pytest.fixture
def validations(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many documents strawberry validated (graphql-core's rules ran)."""
    calls: list[int] = []
    real = strawberry_schema.validate_document

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(strawberry_schema, "validate_document", counting)
    return calls


async def test_repeated_fields_are_refused_before_validation(
    systems: DemoSystems, validations: list[int]
) -> None:
    async with client_for(systems) as client:
        with_token = await client.post("/graphql", json={"query": ATTACK}, headers=auth(["finance"]))
        without = await client.post("/graphql", json={"query": ATTACK})
    [error] = with_token.json()["errors"]
    assert error["extensions"] == {"code": "QUERY_TOO_COMPLEX", "limit": "selections", "max": 2000}
    assert without.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert validations == []


async def test_a_looping_attacker_does_not_starve_another_caller(systems: DemoSystems) -> None:
    """Twenty attack documents, each with a different comment (no cache helps), then a real query:
    before the fix each attack cost about a second of CPU."""
    async with client_for(systems) as client:
        started = time.perf_counter()
        for i in range(20):
            refused = await client.post(
                "/graphql", json={"query": f"# {i}\n{ATTACK}"}, headers=auth(["finance"])
            )
            assert refused.json()["errors"][0]["extensions"]["code"] == "QUERY_TOO_COMPLEX"
        answered = await client.post(
            "/graphql", json={"query": "{ viewer { id } }"}, headers=auth(["finance"])
        )
        elapsed = time.perf_counter() - started
    assert answered.json() == {"data": {"viewer": {"id": "u-limits"}}}
    assert elapsed < 5.0, f"{elapsed:.1f} s for 20 refusals and one answer"


async def test_without_a_token_only_small_documents_are_read(
    systems: DemoSystems, validations: list[int]
) -> None:
    async with client_for(systems, CG_INTROSPECTION="false") as client:
        small = await client.post("/graphql", json={"query": "{ __typename }"})
        big = await client.post("/graphql", json={"query": "{ " + "__typename " * 150 + "}"})
        wide = await client.post(
            "/graphql", json={"query": "{ " + " ".join(f"a{i}: __typename" for i in range(30)) + " }"}
        )
    assert small.json() == {"data": {"__typename": "Query"}}
    for refused in (big, wide):
        [error] = refused.json()["errors"]
        assert error["extensions"]["code"] == "UNAUTHENTICATED"
        assert "Authorization: Bearer" in error["message"]
    assert len(validations) == 1  # only { __typename } was validated


async def test_the_document_cache_is_bounded_by_bytes_and_keeps_only_valid_documents(
    systems: DemoSystems,
) -> None:
    async with client_for(systems, CG_DOCUMENT_CACHE_BYTES="20000") as client:
        documents = client._transport.app.state.gateway.limits.documents  # type: ignore[attr-defined]
        filler = "x" * 1500  # a comment makes each document 1.5 KB of unique valid text
        for i in range(40):  # unique valid documents: 60 KB of text into a 20 KB cache
            ok = await client.post(
                "/graphql",
                json={"query": f"# {i} {filler}\n{{ viewer {{ id }} }}"},
                headers=auth(["finance"]),
            )
            assert "errors" not in ok.json()
        assert 0 < documents.bytes <= 20_000
        before = len(documents)
        for i in range(20):  # invalid documents are never cached
            bad = await client.post(
                "/graphql", json={"query": f"# {i}\n{{ viewer {{ nope }} }}"}, headers=auth(["finance"])
            )
            assert bad.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
        assert len(documents) == before
        assert all("nope" not in text for text in documents._by_text)


async def test_limit_refusals_are_counted_in_metrics(systems: DemoSystems) -> None:
    async with client_for(systems) as client:
        await client.post("/graphql", json={"query": ATTACK}, headers=auth(["finance"]))
        await client.post("/graphql", json={"query": ATTACK})
        exposition = (await client.get("/metrics")).text
    assert 'cg_limit_rejections_total{limit="selections"} 1.0' in exposition
    assert 'cg_limit_rejections_total{limit="anonymous"} 1.0' in exposition
