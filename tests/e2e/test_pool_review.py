"""A review before the pool: a customer a rep releases (or a manager sends to the pool, or the sweep
recycles) waits as PENDING until a sales manager of its region or a data steward approves, returns or marks
it for cleanup; nobody may claim it meanwhile. Reassignments by a manager appear in the pool history and
start the previous owner's cooldown."""

# ruff: noqa: F811  (test_pool's fixtures, imported: pytest passes them by name)
from __future__ import annotations

from typing import Any

from demo.data import DemoExamples
from demo.servers import DemoSystems

from .conftest import customer_id
from .test_pool import (  # noqa: F401 (fixtures)
    CLAIM,
    RELEASE,
    Gateway,
    db_url,
    error,
    examples,
    gateway,
    pool_data,
    raw,
    rep_token,
    reps,
    systems,
)

QUEUE = """query($region: Region!) { poolReviewQueue(region: $region, first: 50) { hasNextPage
  edges { node { review { state cause note previousOwner } customer { accountNo lastContactAt } } } } }"""
DECIDE = """mutation($id: ID!, $decision: PoolReviewDecision!, $owner: ID) {
  decidePoolReview(customerId: $id, decision: $decision, note: "checked", ownerId: $owner) {
    customer { owner { userId } inPool } review { state decidedBy } } }"""
POOL_REVIEW = """query { publicPool(first: 100) { edges { node { customer { accountNo } review { state cause } } } } }"""
ASSIGN = """mutation($id: ID!, $owner: ID) { assignOwner(input: {customerId: $id, ownerId: $owner}) {
  customer { owner { userId } } } }"""
HISTORY = """query($id: ID!) { poolHistory(customerId: $id) { edges { node { kind ownerId assignedTo actor } } } }"""


def _other_rep(systems: DemoSystems, examples: DemoExamples) -> str:
    return next(r for r in reps(systems) if r != examples.rep)


def _manager(systems: DemoSystems, examples: DemoExamples, account_no: str) -> dict[str, Any]:
    return {"roles": ["sales_manager"], "sub": examples.manager, "region": raw(systems, account_no)["region"]}


async def _released(gw: Gateway, examples: DemoExamples) -> str:
    target = examples.owned
    done = await gw.graph.query(
        RELEASE,
        {"id": customer_id(target), "reason": "NO_DEMAND", "note": "预算冻结"},
        **rep_token(examples.rep),
    )
    assert "errors" not in done, done
    return target


async def test_a_released_customer_waits_for_review(
    systems: DemoSystems, examples: DemoExamples, db_url: str
) -> None:
    async with gateway(systems, db_url, CG_POOL_REVIEW="true") as gw:
        target = await _released(gw, examples)
        other_rep = _other_rep(systems, examples)
        refused = await gw.graph.query(CLAIM, {"id": customer_id(target)}, **rep_token(other_rep))
        assert error(refused)["code"] == "FORBIDDEN" and error(refused)["reason"] == "UNDER_REVIEW"
        pool = await gw.graph.query(POOL_REVIEW, **rep_token(other_rep))
        entries = {e["node"]["customer"]["accountNo"]: e["node"] for e in pool["data"]["publicPool"]["edges"]}
        assert entries[target]["review"] == {"state": "PENDING", "cause": "no_demand"}

        manager = _manager(systems, examples, target)
        queue = await gw.graph.query(QUEUE, {"region": manager["region"].upper()}, **manager)
        items = {
            e["node"]["customer"]["accountNo"]: e["node"] for e in queue["data"]["poolReviewQueue"]["edges"]
        }
        assert items[target]["review"] == {
            "state": "PENDING",
            "cause": "no_demand",
            "note": "预算冻结",
            "previousOwner": examples.rep,
        }
        # a manager of another region may not review it; a rep may not review at all
        elsewhere = next(
            r for r in ("EAST", "NORTH", "SOUTH", "WEST", "CENTRAL") if r.lower() != manager["region"]
        )
        assert error(await gw.graph.query(QUEUE, {"region": elsewhere}, **manager))["code"] == "FORBIDDEN"
        rep_decides = await gw.graph.query(
            DECIDE, {"id": customer_id(target), "decision": "APPROVE"}, **rep_token(other_rep)
        )
        assert error(rep_decides)["code"] == "FORBIDDEN"

        approved = await gw.graph.query(DECIDE, {"id": customer_id(target), "decision": "APPROVE"}, **manager)
        assert approved["data"]["decidePoolReview"]["review"] == {
            "state": "APPROVED",
            "decidedBy": examples.manager,
        }
        again = await gw.graph.query(DECIDE, {"id": customer_id(target), "decision": "APPROVE"}, **manager)
        assert error(again)["code"] == "CONFLICT"
        claimed = await gw.graph.query(CLAIM, {"id": customer_id(target)}, **rep_token(other_rep))
        assert claimed["data"]["claimCustomer"]["customer"]["owner"] == {"userId": other_rep}, claimed
        history = await gw.graph.query(HISTORY, {"id": customer_id(target)}, roles=["data_steward"])
        kinds = [e["node"]["kind"] for e in history["data"]["poolHistory"]["edges"]]
        assert kinds == ["CLAIM", "REVIEW", "RELEASE"]


async def test_return_and_cleanup(systems: DemoSystems, examples: DemoExamples, db_url: str) -> None:
    async with gateway(systems, db_url, CG_POOL_REVIEW="true") as gw:
        target = await _released(gw, examples)
        steward = {"roles": ["data_steward"], "sub": "u-steward"}
        returned = await gw.graph.query(DECIDE, {"id": customer_id(target), "decision": "RETURN"}, **steward)
        assert returned["data"]["decidePoolReview"]["customer"]["owner"] == {"userId": examples.rep}, returned
        assert raw(systems, target)["owner_id"] == examples.rep
        # released again, then marked for cleanup: not claimable
        await _released(gw, examples)
        cleanup = await gw.graph.query(DECIDE, {"id": customer_id(target), "decision": "CLEANUP"}, **steward)
        assert cleanup["data"]["decidePoolReview"]["review"]["state"] == "CLEANUP"
        refused = await gw.graph.query(
            CLAIM, {"id": customer_id(target)}, **rep_token(_other_rep(systems, examples))
        )
        assert error(refused)["reason"] == "CLEANUP"


async def test_a_reason_may_skip_the_review(
    systems: DemoSystems, examples: DemoExamples, db_url: str
) -> None:
    async with gateway(systems, db_url, CG_POOL_REVIEW="true", CG_POOL_REVIEW_SKIP="no_demand") as gw:
        target = await _released(gw, examples)
        claimed = await gw.graph.query(
            CLAIM, {"id": customer_id(target)}, **rep_token(_other_rep(systems, examples))
        )
        assert "errors" not in claimed, claimed


async def test_a_reassignment_is_history_and_starts_the_cooldown(
    systems: DemoSystems, examples: DemoExamples, db_url: str
) -> None:
    async with gateway(systems, db_url, CG_POOL_REVIEW="true") as gw:
        target = examples.owned
        manager = _manager(systems, examples, target)
        moved = await gw.graph.query(
            ASSIGN, {"id": customer_id(target), "owner": _other_rep(systems, examples)}, **manager
        )
        assert moved["data"]["assignOwner"]["customer"]["owner"] == {
            "userId": _other_rep(systems, examples)
        }, moved
        history = await gw.graph.query(HISTORY, {"id": customer_id(target)}, roles=["data_steward"])
        [entry] = [e["node"] for e in history["data"]["poolHistory"]["edges"]]
        assert entry == {
            "kind": "REASSIGN",
            "ownerId": examples.rep,
            "assignedTo": _other_rep(systems, examples),
            "actor": examples.manager,
        }
        # to the pool by the manager: under review; once approved, the previous owner is in its cooldown
        to_pool = await gw.graph.query(ASSIGN, {"id": customer_id(target), "owner": None}, **manager)
        assert to_pool["data"]["assignOwner"]["customer"]["owner"] is None, to_pool
        approved = await gw.graph.query(DECIDE, {"id": customer_id(target), "decision": "APPROVE"}, **manager)
        assert "errors" not in approved, approved
        refused = await gw.graph.query(CLAIM, {"id": customer_id(target)}, **rep_token(examples.rep))
        assert error(refused)["reason"] == "COOLDOWN"


async def test_a_send_that_fails_leaves_no_review(
    systems: DemoSystems, examples: DemoExamples, db_url: str
) -> None:
    """The review is written before the owner change; a change the sales system refuses cancels it."""
    async with gateway(systems, db_url, CG_POOL_REVIEW="true") as gw:
        target = examples.owned
        manager = _manager(systems, examples, target)
        stale = raw(systems, target)["version"] - 1
        refused = await gw.graph.query(
            "mutation($id: ID!, $v: Int) { assignOwner(input: {customerId: $id, ownerId: null, version: $v}) "
            "{ customer { accountNo } } }",
            {"id": customer_id(target), "v": stale},
            **manager,
        )
        assert error(refused)["code"] == "CONFLICT"
        assert await gw.pool.review_states([target]) == {}
        assert raw(systems, target)["owner_id"] == examples.rep
