"""Automatic persisted queries (Apollo's protocol) and the allow-list mode."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gateway.persisted import AllowList, query_hash
from gateway.settings import SettingsError

from .gateway_client import GQL, assert_error_shape, bearer, codes, gateway

QUERY = "query Probe { __typename }"
SHA = query_hash(QUERY)


def apq(sha: str = SHA, version: Any = 1) -> dict[str, Any]:
    return {"persistedQuery": {"version": version, "sha256Hash": sha}}


async def send(client: httpx.AsyncClient, body: dict[str, Any], **headers: str) -> httpx.Response:
    return await client.post("/graphql", json=body, headers=headers)


# --- APQ ---------------------------------------------------------------------------------------


async def test_apollo_apq_round_trip() -> None:
    async with gateway() as client:
        # 1. the hash alone: unknown yet — Apollo's exact message and code, HTTP 200 in both media types
        for accept in ("application/json", GQL):
            miss = await send(client, {"extensions": apq()}, accept=accept)
            assert miss.status_code == 200
            assert miss.json() == {
                "errors": [
                    {"message": "PersistedQueryNotFound", "extensions": {"code": "PERSISTED_QUERY_NOT_FOUND"}}
                ]
            }
        # 2. the hash with the query: checked, run and remembered
        registered = await send(client, {"query": QUERY, "extensions": apq()})
        assert registered.json() == {"data": {"__typename": "Query"}}
        # 3. the hash alone now runs the query, by POST and by GET (CDN-friendly)
        hit = await send(client, {"extensions": apq(), "operationName": "Probe"})
        assert hit.json() == {"data": {"__typename": "Query"}}
        get = await client.get("/graphql", params={"extensions": json.dumps(apq())}, headers={"accept": GQL})
        assert get.status_code == 200 and get.json() == {"data": {"__typename": "Query"}}


async def test_apq_works_for_authenticated_callers_and_variables() -> None:
    query = "query($name: String!) { __type(name: $name) { name } }"
    sha = query_hash(query)
    async with gateway() as client:
        await send(client, {"query": query, "variables": {"name": "Customer"}, "extensions": apq(sha)})
        result = await client.post(
            "/graphql", json={"variables": {"name": "Money"}, "extensions": apq(sha)}, headers=bearer()
        )
    assert result.json() == {"data": {"__type": {"name": "Money"}}}


async def test_a_query_with_errors_is_not_remembered() -> None:
    bad = "{ noSuchField }"
    async with gateway() as client:
        first = await send(client, {"query": bad, "extensions": apq(query_hash(bad))})
        again = await send(client, {"extensions": apq(query_hash(bad))})
    assert codes(first.json()) == ["BAD_USER_INPUT"]
    assert codes(again.json()) == ["PERSISTED_QUERY_NOT_FOUND"]


@pytest.mark.parametrize(
    ("extensions", "message"),
    [
        (apq(query_hash("{ somethingElse }")), "provided sha does not match query"),
        (apq(version=2), "Unsupported persisted query version"),
        (apq(version=True), "Unsupported persisted query version"),
        (apq(sha="not-a-hash"), "sha256Hash must be a sha256 hash"),
        ({"persistedQuery": "yes"}, "persistedQuery must be an object"),
    ],
)
async def test_bad_persisted_query_requests_are_refused(extensions: dict[str, Any], message: str) -> None:
    async with gateway() as client:
        as_json = await send(client, {"query": QUERY, "extensions": extensions})
        as_gql = await send(client, {"query": QUERY, "extensions": extensions}, accept=GQL)
    assert as_json.status_code == 200 and as_gql.status_code == 400
    assert_error_shape(as_json.json())
    assert codes(as_json.json()) == ["BAD_USER_INPUT"]
    assert message in as_json.json()["errors"][0]["message"]


async def test_the_apq_store_is_bounded() -> None:
    async with gateway(CG_APQ_CACHE_SIZE="2") as client:
        queries = [f"query Q{n} {{ __typename }}" for n in range(3)]
        for query in queries:
            await send(client, {"query": query, "extensions": apq(query_hash(query))})
        oldest = await send(client, {"extensions": apq(query_hash(queries[0]))})
        newest = await send(client, {"extensions": apq(query_hash(queries[2]))})
    assert codes(oldest.json()) == ["PERSISTED_QUERY_NOT_FOUND"]
    assert newest.json() == {"data": {"__typename": "Query"}}


async def test_with_persisted_queries_off_hashes_alone_are_not_supported() -> None:
    async with gateway(CG_PERSISTED_QUERIES="off") as client:
        alone = await send(client, {"extensions": apq()})
        with_query = await send(client, {"query": QUERY, "extensions": apq()})
    assert alone.json() == {
        "errors": [
            {"message": "PersistedQueryNotSupported", "extensions": {"code": "PERSISTED_QUERY_NOT_SUPPORTED"}}
        ]
    }
    assert with_query.json() == {"data": {"__typename": "Query"}}


# --- allow-list --------------------------------------------------------------------------------

PAGE = "query Page { customers(first: 1) { totalCount } }"
VIEWER = "query Me { viewer { id } }"
TYPENAME = "{ __typename }"


@pytest.fixture
def allowlist(tmp_path: Path) -> Path:
    path = tmp_path / "allowlist.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                query_hash(TYPENAME): {"name": "Typename", "query": TYPENAME},
                query_hash(VIEWER): "Me",  # name only: clients send the query text with the hash
                query_hash(PAGE): {"name": "Page", "query": PAGE, "roles": ["service_app"]},
            }
        )
    )
    return path


async def test_allowlist_runs_only_registered_operations(allowlist: Path) -> None:
    env = {"CG_PERSISTED_QUERIES": "allowlist", "CG_ALLOWLIST_FILE": str(allowlist)}
    async with gateway(env) as client:
        by_hash = await send(client, {"extensions": apq(query_hash(TYPENAME))})
        by_text = await client.post("/graphql", json={"query": VIEWER}, headers=bearer(sub="u-7"))
        text_hash_only = await send(client, {"extensions": apq(query_hash(VIEWER))})
        other = await send(client, {"query": "{ viewer { id name } }"}, accept=GQL)
        other_json = await send(client, {"query": "{ viewer { id name } }"})
        other_hash = await send(client, {"extensions": apq(query_hash("{ viewer { name } }"))})
    assert by_hash.json() == {"data": {"__typename": "Query"}}
    assert by_text.json() == {"data": {"viewer": {"id": "u-7"}}}
    assert codes(text_hash_only.json()) == ["PERSISTED_QUERY_NOT_FOUND"]  # the client then sends the text
    assert other.status_code == 403 and other_json.status_code == 200
    for refused in (other, other_json, other_hash):
        assert refused.json() == {
            "errors": [{"message": "operation not in the allow-list", "extensions": {"code": "FORBIDDEN"}}]
        }


async def test_allowlist_entries_may_be_limited_to_roles(allowlist: Path) -> None:
    env = {"CG_PERSISTED_QUERIES": "allowlist", "CG_ALLOWLIST_FILE": str(allowlist)}
    async with gateway(env) as client:
        person = await client.post("/graphql", json={"query": PAGE}, headers=bearer(["sales_rep"]))
        app = await client.post(
            "/graphql", json={"extensions": apq(query_hash(PAGE))}, headers=bearer(["service_app"], sub="svc")
        )
    assert codes(person.json()) == ["FORBIDDEN"]
    assert "FORBIDDEN" not in codes(app.json())  # it runs (and meets the closed upstream)


def test_apollo_manifest_format_loads(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    path.write_text(
        json.dumps(
            {
                "format": "apollo-persisted-query-manifest",
                "version": 1,
                "operations": [{"id": query_hash(VIEWER), "name": "Me", "type": "query", "body": VIEWER}],
            }
        )
    )
    loaded = AllowList.load(path)
    entry = loaded.get(query_hash(VIEWER))
    assert entry is not None and entry.name == "Me" and entry.query == VIEWER and entry.roles is None


@pytest.mark.parametrize(
    "content",
    [
        "not: [valid",
        "- just a list",
        json.dumps({"abc": "Name"}),
        json.dumps({query_hash(VIEWER): {"query": "{ something { else } }"}}),
        json.dumps({query_hash(VIEWER): {"name": "Me", "roles": "service_app"}}),
        json.dumps({"operations": [{"id": "x", "body": VIEWER}]}),
    ],
)
def test_a_bad_allowlist_file_stops_the_gateway_at_startup(tmp_path: Path, content: str) -> None:
    path = tmp_path / "allowlist.yaml"
    path.write_text(content)
    with pytest.raises(SettingsError):
        AllowList.load(path)


def test_a_missing_allowlist_file_stops_the_gateway_at_startup(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="not found"):
        AllowList.load(tmp_path / "nope.yaml")
