"""Bad requests get a clear 4xx or GraphQL error in the documented shape, in the media type asked for.

GraphQL over HTTP: ``application/json`` keeps 200 for GraphQL request errors;
``application/graphql-response+json`` uses 400 (and no ``data`` entry) when execution never started.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from graphql import get_introspection_query

from tests.factories import KEY_A

from .gateway_client import GQL, assert_error_shape, bearer, codes, gateway

TYPENAME = {"query": "{ __typename }"}


async def post(client: httpx.AsyncClient, body: Any, accept: str | None = None, **kw: Any) -> httpx.Response:
    headers = dict(kw.pop("headers", {}))
    if accept is not None:
        headers["accept"] = accept
    return await client.post("/graphql", json=body, headers=headers, **kw)


# --- media types -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "media"),
    [
        (None, "application/json"),
        ("*/*", "application/json"),
        ("application/json", "application/json"),
        ("application/*", "application/json"),
        (GQL, GQL),
        (f"{GQL}, application/json;q=0.9", GQL),  # what Apollo Client sends
        (f"application/json, {GQL}", "application/json"),  # equal preference: the first listed
        (f"application/json;q=0.5, {GQL};q=0.8", GQL),
        ("text/html, application/xhtml+xml, */*;q=0.8", "application/json"),  # a browser
        (f"{GQL};charset=latin1, application/json", "application/json"),
    ],
)
async def test_the_answer_comes_in_the_media_type_asked_for(accept: str | None, media: str) -> None:
    async with gateway() as client:
        response = await client.post("/graphql", json=TYPENAME, headers={"accept": accept} if accept else {})
    assert response.status_code == 200
    assert response.headers["content-type"] == f"{media}; charset=utf-8"
    assert response.json() == {"data": {"__typename": "Query"}}


@pytest.mark.parametrize(
    "accept", ["text/html", "application/xml", f"{GQL};q=0", "application/json;charset=latin1"]
)
async def test_an_accept_header_without_a_usable_type_is_406(accept: str) -> None:
    async with gateway() as client:
        response = await post(client, TYPENAME, accept)
    assert response.status_code == 406
    assert_error_shape(response.json())
    assert "application/graphql-response+json" in response.json()["errors"][0]["message"]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"query": "{"}, "BAD_USER_INPUT"),  # syntax
        ({"query": "{ noSuchField }"}, "BAD_USER_INPUT"),  # validation
        (  # variable coercion: wrong variable type
            {"query": "query($n: Int) { customers(first: $n) { totalCount } }", "variables": {"n": "ten"}},
            "BAD_USER_INPUT",
        ),
        ({"query": "query($id: ID!) { customer(id: $id) { name } }", "variables": {}}, "BAD_USER_INPUT"),
        ({"query": "query A { __typename } query B { __typename }"}, "BAD_USER_INPUT"),  # which one?
    ],
)
async def test_graphql_request_errors_are_200_in_json_and_400_in_graphql_response_json(
    body: dict[str, Any], code: str
) -> None:
    async with gateway() as client:
        as_json = await post(client, body, "application/json", headers=bearer())
        as_gql = await post(client, body, GQL, headers=bearer())
    assert as_json.status_code == 200
    assert as_gql.status_code == 400
    for response in (as_json, as_gql):
        result = response.json()
        assert_error_shape(result)
        assert "data" not in result  # execution never started
        assert codes(result) == [code]


async def test_once_execution_started_graphql_response_json_is_200_with_data() -> None:
    async with gateway() as client:
        response = await post(client, {"query": "{ __typename viewer { id } }"}, GQL)
    assert response.status_code == 200
    result = response.json()
    assert result["data"] is None  # viewer is non-null and the caller has no token
    assert codes(result) == ["UNAUTHENTICATED"]
    assert result["errors"][0]["path"] == ["viewer"]


async def test_unknown_operation_name_is_a_graphql_error() -> None:
    body = {"query": "query Known { __typename }", "operationName": "Unknown"}
    async with gateway() as client:
        as_json = await post(client, body)
        as_gql = await post(client, body, GQL)
    assert as_json.status_code == 200 and as_gql.status_code == 400
    assert as_json.json() == {
        "errors": [
            {"message": 'Unknown operation named "Unknown".', "extensions": {"code": "BAD_USER_INPUT"}}
        ]
    }


async def test_named_operation_runs() -> None:
    body = {"query": "query A { a: __typename } query B { b: __typename }", "operationName": "B"}
    async with gateway() as client:
        response = await post(client, body, GQL)
    assert response.status_code == 200
    assert response.json() == {"data": {"b": "Query"}}


# --- malformed requests ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "content_type", "status", "message"),
    [
        (b'{"query": "{ __typename }"', "application/json", 400, "not valid JSON"),
        (b'{"query": "\xff\xfe"}', "application/json", 400, "not valid UTF-8"),
        (b"", "application/json", 400, "empty"),
        (b"   ", "application/json", 400, "empty"),
        (b'[{"query": "{ __typename }"}, {"query": "{ __typename }"}]', "application/json", 400, "Batching"),
        (b'"{ __typename }"', "application/json", 400, "JSON object"),
        (b"42", "application/json", 400, "JSON object"),
        (b"null", "application/json", 400, "JSON object"),
        (b"{}", "application/json", 400, "no `query`"),
        (b'{"qeury": "{ __typename }"}', "application/json", 400, "no `query`"),
        (b'{"query": 42}', "application/json", 400, "`query`"),
        (b'{"query": ["{ __typename }"]}', "application/json", 400, "`query`"),
        (b'{"query": "{ __typename }", "variables": "x"}', "application/json", 400, "`variables`"),
        (b'{"query": "{ __typename }", "variables": [1]}', "application/json", 400, "`variables`"),
        (b'{"query": "{ __typename }", "operationName": 1}', "application/json", 400, "`operationName`"),
        (b'{"query": "{ __typename }", "extensions": 7}', "application/json", 400, "`extensions`"),
        (b'{"query": "{ __typename }"}', None, 415, "Content-Type is missing"),
        (b'{"query": "{ __typename }"}', "text/plain", 415, "application/json"),
        (b"{ __typename }", "application/graphql", 415, "application/json"),
        (b"query=%7B__typename%7D", "application/x-www-form-urlencoded", 415, "application/json"),
        (b'{"query": "{ __typename }"}', "application/json; charset=latin1", 415, "UTF-8"),
        (b'{"query": "{ __typename }"}', "multipart/form-data; boundary=x", 415, "application/json"),
    ],
)
@pytest.mark.parametrize("accept", ["application/json", GQL])
async def test_malformed_requests_are_refused_clearly(
    content: bytes, content_type: str | None, status: int, message: str, accept: str
) -> None:
    headers = {"accept": accept}
    if content_type is not None:
        headers["content-type"] = content_type
    async with gateway() as client:
        response = await client.post("/graphql", content=content, headers=headers)
    assert response.status_code == status
    assert response.headers["content-type"] == f"{accept}; charset=utf-8"
    result = response.json()
    assert_error_shape(result)
    assert "data" not in result
    assert codes(result) == ["BAD_USER_INPUT"]
    assert message in result["errors"][0]["message"]


async def test_utf8_with_charset_and_non_ascii_queries_are_fine() -> None:
    async with gateway() as client:
        response = await client.post(
            "/graphql",
            content='{"query": "{ __type(name: \\"Run🏃Swim🏊\\") { name } }"}'.encode(),
            headers={"content-type": "application/json; charset=utf-8"},
        )
    assert response.status_code == 200
    assert response.json() == {"data": {"__type": None}}


async def test_a_body_over_the_limit_is_413_whether_declared_or_streamed() -> None:
    big = b'{"query": "{ __typename }", "pad": "' + b"x" * 5000 + b'"}'

    async def chunks() -> Any:  # no Content-Length: the limit is enforced while reading
        for start in range(0, len(big), 512):
            yield big[start : start + 512]

    async with gateway(CG_MAX_BODY_BYTES="4096") as client:
        declared = await client.post("/graphql", content=big, headers={"content-type": "application/json"})
        streamed = await client.post(
            "/graphql", content=chunks(), headers={"content-type": "application/json"}
        )
        small = await client.post("/graphql", json=TYPENAME)
    for response in (declared, streamed):
        assert response.status_code == 413
        assert_error_shape(response.json())
        assert "4096 bytes" in response.json()["errors"][0]["message"]
    assert small.status_code == 200


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"])
async def test_other_methods_are_405_with_allow(method: str) -> None:
    async with gateway() as client:
        response = await client.request(method, "/graphql", json=TYPENAME)
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, POST"
    if method != "HEAD":
        assert_error_shape(response.json())


# --- GET ---------------------------------------------------------------------------------------


async def test_get_runs_queries_with_variables() -> None:
    params = {
        "query": "query T($name: String!) { __type(name: $name) { name } }",
        "variables": '{"name": "Customer"}',
        "operationName": "T",
    }
    async with gateway() as client:
        response = await client.get("/graphql", params=params, headers={"accept": GQL})
    assert response.status_code == 200
    assert response.json() == {"data": {"__type": {"name": "Customer"}}}


async def test_get_with_a_mutation_is_405_allow_post() -> None:
    mutation = 'mutation { logActivity(input: {customerId: "x", type: CALL, subject: "s"}) { activity { activityId } } }'
    async with gateway() as client:
        for accept in ("application/json", GQL):
            response = await client.get("/graphql", params={"query": mutation}, headers={"accept": accept})
            assert response.status_code == 405
            assert response.headers["allow"] == "POST"
            assert_error_shape(response.json())


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"query": "{ __typename }", "variables": "{nope"}, "`variables` parameter is not valid JSON"),
        ({"query": "{ __typename }", "variables": "[1]"}, "`variables`"),
        ({"query": "{ __typename }", "extensions": "{"}, "`extensions` parameter is not valid JSON"),
        ({}, "no `query`"),
    ],
)
async def test_get_with_bad_parameters_is_400(params: dict[str, str], message: str) -> None:
    async with gateway() as client:
        response = await client.get("/graphql", params=params, headers={"accept": "application/json"})
    assert response.status_code == 400
    assert message in response.json()["errors"][0]["message"]


async def test_subscriptions_are_not_served_over_http() -> None:
    async with gateway() as client:
        response = await post(client, {"query": "subscription { __typename }"}, GQL)
    assert response.status_code == 400
    assert "WebSocket" in response.json()["errors"][0]["message"]


# --- introspection, GraphiQL, authentication ---------------------------------------------------


async def test_development_serves_graphiql_to_browsers_and_allows_introspection() -> None:
    async with gateway() as client:
        page = await client.get("/graphql", headers={"accept": "text/html"})
        schema = await post(client, {"query": get_introspection_query()})
    assert page.status_code == 200 and "graphiql" in page.text.lower()
    assert schema.status_code == 200
    assert schema.json()["data"]["__schema"]["queryType"]["name"] == "Query"


async def test_production_turns_graphiql_and_introspection_off() -> None:
    async with gateway(CG_ENVIRONMENT="production", CG_DATA_KEYS=KEY_A) as client:
        page = await client.get("/graphql", headers={"accept": "text/html"})
        # twice: the refusal holds for a document already in the parser and validation caches
        first = await post(client, {"query": "{ __schema { queryType { name } } }"})
        again = await post(client, {"query": "{ __schema { queryType { name } } }"})
        typename = await post(client, TYPENAME)
    assert page.status_code == 406 and "graphiql" not in page.text.lower()
    for response in (first, again):
        assert response.status_code == 200
        assert set(codes(response.json())) == {"BAD_USER_INPUT"}
        assert "introspection has been disabled" in response.json()["errors"][0]["message"]
        assert "data" not in response.json()
    assert typename.json() == {"data": {"__typename": "Query"}}


async def test_production_can_turn_introspection_and_graphiql_back_on() -> None:
    async with gateway(
        CG_ENVIRONMENT="production", CG_DATA_KEYS=KEY_A, CG_INTROSPECTION="true", CG_GRAPHIQL="1"
    ) as client:
        page = await client.get("/graphql", headers={"accept": "text/html"})
        schema = await post(client, {"query": "{ __schema { queryType { name } } }"})
    assert page.status_code == 200
    assert schema.json() == {"data": {"__schema": {"queryType": {"name": "Query"}}}}


async def test_deep_introspection_is_refused() -> None:
    deep = "{ __schema { types { fields { type { fields { type { fields { type { fields { name } } } } } } } } } }"
    async with gateway() as client:
        response = await post(client, {"query": deep}, GQL)
    assert response.status_code == 400
    assert "introspection" in response.json()["errors"][0]["message"].lower()


async def test_without_a_token_only_introspection_works() -> None:
    async with gateway() as client:
        response = await post(client, {"query": "{ __typename customers { totalCount } }"})
    result = response.json()
    assert response.status_code == 200
    assert result["data"] is None
    assert codes(result) == ["UNAUTHENTICATED"]


@pytest.mark.parametrize("bad_id", ["%%%", "", "bm90LWFuLWlk", "T3JkZXI6TzU1MDAxMjM", "Q3VzdG9tZXI6QTEsQTI"])
async def test_invalid_or_foreign_global_ids_are_bad_user_input(bad_id: str) -> None:
    async with gateway() as client:
        response = await post(
            client,
            {"query": "query($id: ID!) { customer(id: $id) { name } }", "variables": {"id": bad_id}},
            GQL,
            headers=bearer(["data_steward"]),
        )
    assert response.status_code == 200
    result = response.json()
    assert result["data"] == {"customer": None}
    assert codes(result) == ["BAD_USER_INPUT"]
    assert bad_id not in result["errors"][0]["message"] or not bad_id


async def test_error_responses_carry_the_request_id() -> None:
    async with gateway() as client:
        response = await client.post(
            "/graphql", content=b"{", headers={"content-type": "application/json", "x-request-id": "req-42"}
        )
    assert response.status_code == 400
    assert response.headers["x-request-id"] == "req-42"


async def test_readiness_for_a_load_balancer_ignores_the_departments() -> None:
    """With every department unreachable, /readyz says so (503) but /readyz?scope=self — the
    Kubernetes readiness probe — stays 200 while the gateway's database answers: a department down
    costs its own fields, not every instance at once."""
    async with gateway(lifespan=True) as client:
        full = await client.get("/readyz")
        own = await client.get("/readyz?scope=self")
    assert full.status_code == 503 and own.status_code == 200
    assert own.json()["database"]["reachable"] is True
