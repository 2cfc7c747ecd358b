"""Build the three connectors from settings (one pooled client each, shared by all requests)."""

from __future__ import annotations

from connectors.base import ConnectorOptions
from connectors.contracts import ContractsConnector
from connectors.sales import SalesConnector
from connectors.support import SupportConnector
from schema.loaders import Upstreams

from .settings import Settings


def _options(settings: Settings, max_in_flight: int, max_rate: float | None = None) -> ConnectorOptions:
    return {
        "timeout": settings.upstream_timeout,
        "max_attempts": settings.retry_attempts,
        "breaker_failures": settings.breaker_failures,
        "breaker_cooldown": settings.breaker_cooldown,
        "max_in_flight": max_in_flight,
        "max_rate": max_rate,
    }


def build_upstreams(settings: Settings) -> Upstreams:
    s = settings
    return Upstreams(
        sales=SalesConnector(s.sales_url, s.sales_api_key, **_options(s, s.sales_max_in_flight)),
        support=SupportConnector(
            s.support_url, s.support_token, **_options(s, s.support_max_in_flight, s.support_max_rate or None)
        ),
        contracts=ContractsConnector(
            s.contracts_url, s.contracts_user, s.contracts_password, **_options(s, s.contracts_max_in_flight)
        ),
    )
