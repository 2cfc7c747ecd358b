"""Build the three connectors from settings (one pooled client each, shared by all requests)."""

from __future__ import annotations

from connectors.contracts import ContractsConnector
from connectors.sales import SalesConnector
from connectors.support import SupportConnector
from schema.loaders import Upstreams

from .settings import Settings


def build_upstreams(settings: Settings) -> Upstreams:
    timeout = settings.upstream_timeout
    pool = settings.upstream_max_connections
    return Upstreams(
        sales=SalesConnector(
            settings.sales_url, settings.sales_api_key, timeout=timeout, max_connections=pool
        ),
        support=SupportConnector(
            settings.support_url, settings.support_token, timeout=timeout, max_connections=pool
        ),
        contracts=ContractsConnector(
            settings.contracts_url,
            settings.contracts_user,
            settings.contracts_password,
            timeout=timeout,
            max_connections=pool,
            max_in_flight=settings.contracts_max_in_flight,
        ),
    )
