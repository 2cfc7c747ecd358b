"""Input sizes are bounded at the edge, so no caller can make a system fail for everyone: the review's
55,000-character search made the sales system answer 500, the retries opened the shared breaker
(``/readyz`` 503, other roles UPSTREAM_UNAVAILABLE), and above 65,536 characters the answer was
INTERNAL with a stack trace in the log."""

from __future__ import annotations

import logging

import pytest

from demo.servers import DemoSystems

from .test_request_limits import auth, client_for, total_calls

SEARCH = "query($q: String) { customers(first: 5, filter: {search: $q}) { totalCount } }"


@pytest.mark.parametrize("length", [201, 55_000, 70_000])
async def test_a_long_search_is_refused_before_any_call(
    systems: DemoSystems, length: int, caplog: pytest.LogCaptureFixture
) -> None:
    systems.clear_faults()
    async with client_for(systems, CG_BREAKER_FAILURES="2") as client:
        systems.reset_stats()
        for _ in range(5):
            answer = await client.post(
                "/graphql",
                json={"query": SEARCH, "variables": {"q": "x" * length}},
                headers=auth(["finance"]),
            )
            [error] = answer.json()["errors"]
            assert error["extensions"]["code"] == "BAD_USER_INPUT", error
        assert total_calls(systems) == 0
        ready = await client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["systems"]["sales"]["circuit"]["state"] == "closed"
        other = await client.post(
            "/graphql",
            json={"query": "{ customers(first: 1) { totalCount } }"},
            headers=auth(["support_agent"]),
        )
        assert "errors" not in other.json()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR and r.exc_info]


async def test_long_strings_in_variables_and_documents_are_refused(systems: DemoSystems) -> None:
    async with client_for(systems) as client:
        in_variables = await client.post(
            "/graphql",
            json={
                "query": "query($id: ID!) { customer(id: $id) { name } }",
                "variables": {"id": "Q" * 10_001},
            },
            headers=auth(["finance"]),
        )
        literal = '{ customers(first: 1, filter: {search: "' + "y" * 12_000 + '"}) { totalCount } }'
        in_document = await client.post("/graphql", json={"query": literal}, headers=auth(["finance"]))
    [first] = in_variables.json()["errors"]
    assert first["extensions"]["code"] == "BAD_USER_INPUT" and "$id" in first["message"]
    [second] = in_document.json()["errors"]
    assert second["extensions"]["code"] == "BAD_USER_INPUT" and "10000 characters" in second["message"]


async def test_a_request_the_client_cannot_send_does_not_open_the_breaker(systems: DemoSystems) -> None:
    """Even a request the HTTP client refuses to send (a header it cannot encode) is the caller's
    problem, not the system's: it never counts toward the shared breaker."""
    from connectors.errors import UpstreamUnavailable
    from connectors.sales import SalesConnector

    async with SalesConnector(
        systems.sales_url, api_key=systems.sales_api_key, breaker_failures=1, max_attempts=1
    ) as sales:
        for _ in range(3):
            with pytest.raises(UpstreamUnavailable) as raised:
                await sales._request(
                    "GET", "/api/v1/accounts", resource="accounts", headers={"X-Bad": "a\nb"}
                )
            assert raised.value.kind == "bad_request"
        assert sales.breaker.closed
        assert (await sales.list_accounts(page=1, per_page=1)).accounts
