"""Document limits: depth, aliases, tokens and cost — measured once per document, compared per caller."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from typing import Any

import pytest
import strawberry
from graphql import parse
from strawberry.types import ExecutionResult

import gateway.limits as limits_module
from gateway.limits import LimitsExtension, RequestLimits, measure_operation
from gateway.settings import Settings, SettingsError, load_settings
from schema import build_schema

from .gateway_client import GQL, assert_error_shape, bearer, codes, gateway

SCHEMA = build_schema()._schema


def cost(query: str, variables: dict[str, Any] | None = None, operation: str | None = None, **kw: Any) -> int:
    measure = measure_operation(SCHEMA, parse(query), operation, **kw)
    assert measure is not None
    return measure.cost.evaluate(variables)


def measure(query: str) -> tuple[int, int]:
    found = measure_operation(SCHEMA, parse(query), None)
    assert found is not None
    return found.depth, found.aliases


# --- the cost model ----------------------------------------------------------------------------


def test_every_field_costs_one_and_typename_is_free() -> None:
    assert cost("{ __typename }") == 0
    assert cost("{ viewer { id name roles } }") == 4


def test_first_multiplies_the_connection_and_its_edges_are_not_counted_twice() -> None:
    # customers 1 + 10 × (edges 1 + 1 × (node 1 + name 1)) ; totalCount 1 × 10 too (inside the connection)
    assert cost("{ customers(first: 10) { edges { node { name } } } }") == 1 + 10 * (1 + 2)
    assert cost("{ customers(first: 10) { totalCount nodes { name } } }") == 1 + 10 * (1 + 1 + 1)


def test_first_defaults_to_the_schema_default() -> None:
    assert cost("{ customers { nodes { name } } }") == 1 + 20 * 2  # customers(first: Int = 20)
    assert cost("{ customers(first: null) { nodes { name } } }") == 1 + 20 * 2


def test_a_list_without_first_counts_as_the_configured_list_size() -> None:
    query = "query($id: ID!) { customer(id: $id) { opportunities { title stage } } }"
    assert cost(query) == 1 + 1 + 10 * 2
    assert cost(query, list_size=3) == 1 + 1 + 3 * 2


def test_nested_lists_multiply() -> None:
    query = "{ customers(first: 100) { nodes { orders(first: 50) { orderNo total { amount currency } } } } }"
    orders = 1 + 50 * (1 + 3)
    assert cost(query) == 1 + 100 * (1 + orders)  # nodes 1 + 1 × orders


def test_variables_are_resolved_per_request() -> None:
    query = "query($n: Int) { customers(first: $n) { nodes { name } } }"
    assert cost(query, {"n": 5}) == 1 + 5 * 2
    assert cost(query, {"n": 100}) == 1 + 100 * 2
    assert cost(query, {}) == 1 + 20 * 2  # missing: the argument's default
    assert cost(query, {"n": None}) == 1 + 20 * 2
    assert cost(query, {"n": "many"}) == 1 + 20 * 2  # coercion refuses it later anyway
    with_default = "query($n: Int = 7) { customers(first: $n) { nodes { name } } }"
    assert cost(with_default, {}) == 1 + 7 * 2
    assert cost(with_default, {"n": 3}) == 1 + 3 * 2


def test_negative_or_huge_first_is_bounded() -> None:
    query = "query($n: Int) { customers(first: $n) { nodes { name } } }"
    assert cost(query, {"n": -5}) == 1
    assert cost(query, {"n": 10**30}) == 1 + 2**31 * 2


def test_fragments_cost_what_they_select_wherever_they_are_spread() -> None:
    inline = "{ customers(first: 4) { nodes { name email } } }"
    fragment = "{ customers(first: 4) { nodes { ...F } } } fragment F on Customer { name email }"
    typed = "{ customers(first: 4) { nodes { ... on Customer { name email } } } }"
    assert cost(inline) == cost(fragment) == cost(typed) == 1 + 4 * (1 + 2)


def test_fragments_spreading_fragments_are_measured_in_linear_time() -> None:
    levels = 40  # each level doubles: 2^40 fields at execution
    parts = ["query($n: Int) { customers(first: $n) { nodes { ...F0 } } }"]
    for level in range(levels):
        parts.append(f"fragment F{level} on Customer {{ ...F{level + 1} ...F{level + 1} }}")
    parts.append(f"fragment F{levels} on Customer {{ orders(first: $n) {{ orderNo }} }}")
    started = time.perf_counter()
    measured = cost("\n".join(parts), {"n": 2})
    assert time.perf_counter() - started < 0.5
    assert measured > 2**40


def test_introspection_is_not_counted_beyond_its_root() -> None:
    assert measure("{ __schema { types { fields { type { ofType { ofType { name } } } } } } }") == (1, 0)
    assert cost("{ __schema { types { name } } }") == 1


def test_depth_and_aliases() -> None:
    assert measure("{ viewer { id } }") == (2, 0)
    assert measure("{ customers { edges { node { orders { total { amount } } } } } }") == (6, 0)
    assert measure("{ a: viewer { b: id } c: viewer { id } }") == (2, 3)
    assert measure("{ ...V ...V } fragment V on Query { x: viewer { id } }") == (2, 2)


def test_unknown_operation_measures_nothing() -> None:
    assert measure_operation(SCHEMA, parse("query A { __typename }"), "B") is None
    assert measure_operation(SCHEMA, parse("query A { __typename } query B { __typename }"), None) is None


# --- limits per role, and the measure cache ----------------------------------------------------


def limits(**overrides: Any) -> RequestLimits:
    return RequestLimits(Settings(jwt_secret="x", **overrides))


def test_cost_limits_per_role_take_the_most_generous_role() -> None:
    rl = limits(max_cost=1000, max_cost_per_role={"service_app": 5000, "intern": 100})
    assert rl.cost_limit(frozenset()) == 1000
    assert rl.cost_limit(frozenset({"sales_rep"})) == 1000
    assert rl.cost_limit(frozenset({"intern"})) == 100
    assert rl.cost_limit(frozenset({"intern", "sales_rep"})) == 1000
    assert rl.cost_limit(frozenset({"service_app", "sales_rep"})) == 5000


def test_check_names_the_limit_and_the_figures() -> None:
    rl = limits(max_cost=100, max_depth=3, max_aliases=1)
    doc = parse("query($n: Int) { customers(first: $n) { nodes { name } } }")
    assert rl.check(SCHEMA, doc, None, {"n": 10}, frozenset()) is None
    refusal = rl.check(SCHEMA, doc, None, {"n": 60}, frozenset())
    assert refusal is not None
    assert str(refusal) == "Query cost 121 exceeds the limit 100 for your roles."
    assert refusal.extensions == {"limit": "cost", "value": 121, "max": 100}
    deep = rl.check(SCHEMA, parse("{ customers { edges { node { name } } } }"), None, None, frozenset())
    assert deep is not None and str(deep) == "Query depth 4 exceeds the limit 3."
    aliased = rl.check(SCHEMA, parse("{ a: viewer { id } b: viewer { id } }"), None, None, frozenset())
    assert aliased is not None and str(aliased) == "Query has 2 aliases, more than the limit 1."


def test_a_document_is_measured_once_and_compared_per_request(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str | None] = []
    real = limits_module.measure_operation

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[2])
        return real(*args, **kwargs)

    monkeypatch.setattr(limits_module, "measure_operation", counting)
    rl = limits(max_cost=100, max_cost_per_role={"service_app": 10_000})
    text = "query($n: Int) { customers(first: $n) { nodes { name } } }"
    doc = parse(text)
    rl.documents.put(text, doc)  # a valid document, cached (schema/documents.py)
    outcomes = [
        rl.check(SCHEMA, doc, None, {"n": 10}, frozenset({"sales_rep"})),
        rl.check(SCHEMA, doc, None, {"n": 90}, frozenset({"sales_rep"})),
        rl.check(SCHEMA, doc, None, {"n": 90}, frozenset({"service_app"})),
        rl.check(SCHEMA, doc, None, {"n": 90}, frozenset({"sales_rep"})),
    ]
    assert [o is None for o in outcomes] == [True, False, True, False]
    assert calls == [None]


def test_measures_are_kept_with_cached_documents_only() -> None:
    rl = limits()
    cached, other = parse("{ viewer { id } }"), parse("{ viewer { id } }")  # equal text, distinct documents
    rl.documents.put("{ viewer { id } }", cached)
    rl.measure(SCHEMA, cached, None)
    rl.measure(SCHEMA, other, None)
    assert rl.documents.memo(cached) == {"measures": {None: rl.measure(SCHEMA, cached, None)}}
    assert rl.documents.memo(other) is None  # measured for its request, kept nowhere


def test_checking_a_cached_document_is_cheap() -> None:
    rl = limits()
    text = "query($id: ID!) { customer(id: $id) { name orders(first: 5) { orderNo total { amount } } } }"
    doc = parse(text)
    rl.documents.put(text, doc)
    roles = frozenset({"sales_rep"})
    rl.check(SCHEMA, doc, None, {"id": "x"}, roles)
    rounds = 20_000
    started = time.perf_counter()
    for _ in range(rounds):
        rl.check(SCHEMA, doc, None, {"id": "x"}, roles)
    per_check = (time.perf_counter() - started) / rounds
    assert per_check < 50e-6, f"{per_check * 1e6:.1f} µs per check"


# --- settings ----------------------------------------------------------------------------------


def test_cost_per_role_from_the_environment_and_a_toml_table(tmp_path: Any) -> None:
    env = {"CG_JWT_SECRET": "x", "CG_MAX_COST_PER_ROLE": "service_app=5000, executive=2000"}
    assert load_settings(environ=env).max_cost_per_role == {"service_app": 5000, "executive": 2000}
    config = tmp_path / "gateway.toml"
    config.write_text("[gateway]\nmax_cost = 900\n[gateway.max_cost_per_role]\nservice_app = 7000\n")
    settings = load_settings(config, environ={})
    assert settings.max_cost == 900
    assert settings.max_cost_per_role == {"service_app": 7000}


@pytest.mark.parametrize(
    "env",
    [
        {"CG_MAX_COST_PER_ROLE": "service_app"},
        {"CG_MAX_COST_PER_ROLE": "service_app=lots"},
        {"CG_MAX_COST_PER_ROLE": "=5"},
        {"CG_MAX_COST_PER_ROLE": "service_app=0"},
        {"CG_MAX_DEPTH": "0"},
        {"CG_RATE_LIMIT_PER_MINUTE": "-1"},
        {"CG_PERSISTED_QUERIES": "sometimes"},
        {"CG_PERSISTED_QUERIES": "allowlist"},  # without a file
    ],
)
def test_bad_limit_settings_are_refused_at_startup(env: dict[str, str]) -> None:
    with pytest.raises(SettingsError):
        load_settings(environ=env)


# --- through HTTP ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "query", "limit", "message"),
    [
        (
            {"CG_MAX_DEPTH": "3"},
            "{ customers { edges { node { name } } } }",
            "depth",
            "Query depth 4 exceeds the limit 3.",
        ),
        (
            {"CG_MAX_ALIASES": "2"},
            "{ a: __typename b: __typename c: __typename }",
            "aliases",
            "Query has 3 aliases, more than the limit 2.",
        ),
        (
            {"CG_MAX_TOKENS": "10"},
            "{ viewer { id name roles region } a: __typename }",
            "tokens",
            "Query has more than 10 tokens, the limit.",
        ),
        (
            {"CG_MAX_COST": "300"},
            "{ customers(first: 100) { nodes { name email } } }",
            "cost",
            "Query cost 301 exceeds the limit 300 for your roles.",
        ),
    ],
)
async def test_limits_refuse_before_anything_runs(
    env: dict[str, str], query: str, limit: str, message: str
) -> None:
    async with gateway(env) as client:
        as_gql = await client.post("/graphql", json={"query": query}, headers={"accept": GQL, **bearer()})
        as_json = await client.post("/graphql", json={"query": query}, headers=bearer())
    assert as_gql.status_code == 400 and as_json.status_code == 200
    for response in (as_gql, as_json):
        result = response.json()
        assert_error_shape(result)
        assert "data" not in result
        assert codes(result) == ["QUERY_TOO_COMPLEX"]
        assert result["errors"][0]["message"] == message
        assert result["errors"][0]["extensions"]["limit"] == limit


async def test_a_service_account_may_spend_more_than_a_person() -> None:
    query = "query($n: Int) { customers(first: $n) { nodes { name } } }"
    env = {"CG_MAX_COST": "100", "CG_MAX_COST_PER_ROLE": "service_app=1000"}
    async with gateway(env) as client:
        person = await client.post(
            "/graphql", json={"query": query, "variables": {"n": 80}}, headers=bearer(["sales_rep"])
        )
        app = await client.post(
            "/graphql",
            json={"query": query, "variables": {"n": 80}},
            headers=bearer(["service_app"], sub="svc-1"),
        )
        person_small = await client.post(
            "/graphql", json={"query": query, "variables": {"n": 10}}, headers=bearer(["sales_rep"])
        )
    assert codes(person.json()) == ["QUERY_TOO_COMPLEX"]
    assert person.json()["errors"][0]["message"] == "Query cost 161 exceeds the limit 100 for your roles."
    # within its limit, the service account's query runs (and only then meets the closed upstream)
    assert "QUERY_TOO_COMPLEX" not in codes(app.json())
    assert "QUERY_TOO_COMPLEX" not in codes(person_small.json())


def test_the_readme_example_costs_what_the_readme_says() -> None:
    assert cost("{ customers(first: 50) { nodes { name orders(first: 5) { orderNo } } } }") == 401


@strawberry.type
class _Tick:
    value: int


@strawberry.type
class _Query:
    ok: bool = True


@strawberry.type
class _Subscription:
    @strawberry.subscription
    async def ticks(self) -> AsyncGenerator[_Tick, None]:
        for n in range(3):
            yield _Tick(value=n)


async def test_subscriptions_are_limited_too() -> None:
    rl = RequestLimits(Settings(jwt_secret="x", max_depth=1))
    schema = strawberry.Schema(_Query, subscription=_Subscription, extensions=[lambda: LimitsExtension(rl)])
    stream = await schema.subscribe("subscription { ticks { value } }")
    assert not isinstance(stream, ExecutionResult)
    results = [result async for result in stream]
    assert len(results) == 1
    assert results[0].errors is not None
    assert results[0].errors[0].message == "Query depth 2 exceeds the limit 1."
