"""The pool's owned limit holds across gateway instances, not per process: two claims of one rep sent
at once through two instances sharing one database can no longer both pass a limit they each counted
below (the claim holds a lock in the database from its count to its owner change)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from demo.data import DemoExamples
from demo.servers import DemoSystems

from .conftest import customer_id, keyed_database
from .test_pool import CLAIM, all_accounts, error, examples, gateway, pool_data, rep_token, systems  # noqa: F401


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
async def shared_db(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('shared')}/gateway.db"
        return
    url: str = request.getfixturevalue("pg_url")
    schema = f"cg_pool_{uuid.uuid4().hex[:10]}"
    yield f"{url}?schema={schema}"

    db = keyed_database(url)
    try:
        async with db.engine.begin() as conn:
            import sqlalchemy as sa

            await conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    finally:
        await db.aclose()


from tests.store.conftest import pg_url  # noqa: E402, F401 (the fixture, for the PostgreSQL run)


async def test_two_instances_never_pass_the_owned_limit_together(
    systems: DemoSystems,  # noqa: F811
    examples: DemoExamples,  # noqa: F811
    shared_db: str,
) -> None:
    owned = len(all_accounts(systems, owner_id=examples.rep))
    first, second = [a["account_no"] for a in all_accounts(systems, unowned="true")][:2]
    systems.set_faults("sales", latency_ms=150)  # the count and the owner change interleave
    try:
        async with (
            gateway(systems, shared_db, CG_POOL_MAX_OWNED=str(owned + 1)) as one,
            gateway(systems, shared_db, CG_POOL_MAX_OWNED=str(owned + 1)) as two,
        ):
            results = await asyncio.gather(
                one.graph.query(CLAIM, {"id": customer_id(first)}, **rep_token(examples.rep)),
                two.graph.query(CLAIM, {"id": customer_id(second)}, **rep_token(examples.rep)),
            )
    finally:
        systems.clear_faults()
    won = [r for r in results if "errors" not in r]
    refused = [r for r in results if "errors" in r]
    assert len(won) == 1 and len(refused) == 1, results
    assert error(refused[0])["reason"] == "OWNED_LIMIT"
    assert len(all_accounts(systems, owner_id=examples.rep)) == owned + 1
