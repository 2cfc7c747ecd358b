"""Fakes for the three systems' wire formats, and a recording mock transport."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

Handler = Callable[[httpx.Request], httpx.Response | Awaitable[httpx.Response]]


class Recorder:
    """An ``httpx.MockTransport`` that remembers every request it answered."""

    def __init__(self, handler: Handler) -> None:
        self.requests: list[httpx.Request] = []

        async def record(request: httpx.Request) -> httpx.Response:
            self.requests.append(request)
            response = handler(request)
            if not isinstance(response, httpx.Response):
                response = await response
            return response

        self.transport = httpx.MockTransport(record)

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]


def answer(response: httpx.Response) -> Handler:
    """A handler that always gives this response."""
    return lambda request: response


def body(request: httpx.Request) -> Any:
    return json.loads(request.content)


def raw_account(account_no: str = "A100234", **changes: Any) -> dict[str, Any]:
    account = {
        "account_no": account_no,
        "kind": "company",
        "name": "上海澄川科技有限公司",
        "contact_name": "王芳",
        "title": "采购经理",
        "email": "Wang.Fang@ChengChuan.cn ",
        "phone": "+86 138 1234 5678",
        "address": "上海市浦东新区张江路 88 号",
        "tax_id": "91310115MA1K4Q2X3L",
        "region": "east",
        "status": "customer",
        "owner_id": "u-1021",
        "owner_since": "2025-01-10T02:00:00Z",
        "pool_since": None,
        "created_at": "2023-11-02T03:04:05Z",
        "updated_at": "2025-06-01T10:00:00Z",
        "version": 7,
    }
    return {**account, **changes}


def raw_ticket(id: int = 88123, email: str = "wang.fang@chengchuan.cn", **changes: Any) -> dict[str, Any]:
    ticket = {
        "id": id,
        "requester_email": email,
        "subject": "发票抬头错误",
        "category": "complaint",
        "priority": "high",
        "status": "open",
        "channel": "phone",
        "assignee": "agent-17",
        "created_at": 1717000000,
        "updated_at": 1717003600,
        "satisfaction": {"score": 4, "comment": "处理及时"},
    }
    return {**ticket, **changes}


def raw_contract(contract_id: str = "HT-2024-00123", **changes: Any) -> dict[str, Any]:
    contract = {
        "contract_id": contract_id,
        "party_tax_id": "91310115MA1K4Q2X3L",
        "party_name": "上海澄川科技有限公司",
        "type": "sales",
        "status": "active",
        "signed_on": "2024-01-15",
        "starts_on": "2024-02-01",
        "ends_on": "2025-01-31",
        "auto_renew": True,
        "value": "125000.00",
        "currency": "CNY",
        "payment_terms": "NET30",
        "confidential": False,
        "updated_on": "2024-06-30",
    }
    return {**contract, **changes}
