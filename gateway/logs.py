"""Logs: one JSON object per line on stderr (``JsonFormatter``), with the id of the request being served;
only whitelisted fields, never a message's personal data (``configure_logging``)."""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import IO, Any, Final

import orjson

from .request_id import request_id_var

__all__ = ["LOG_FIELDS", "JsonFormatter", "configure_logging"]

# ``extra=`` keys a log line may carry; anything else passed in ``extra`` is dropped.
LOG_FIELDS: Final = (
    "method",
    "path",
    "status",
    "duration_ms",
    "system",
    "resource",
    "kind",
    "attempt",
    "operation",
    "outcome",
    "state",
    "limit",
    "count",
    "graphql_path",
    "apq",
    "user",  # a user id (the bulk-read warning); never customer data
    "roles",
)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time``, ``level``, ``logger``, ``message``, ``request_id`` (when
    serving a request), the whitelisted ``extra`` fields (scalars only), and for an exception its
    type and stack frames (not its message, which may quote data)."""

    def __init__(self, fields: Iterable[str] = LOG_FIELDS) -> None:
        super().__init__()
        self._fields = tuple(fields)

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id is not None:
            line["request_id"] = request_id
        fields = record.__dict__
        for name in self._fields:
            value = fields.get(name)
            if value is not None and isinstance(value, str | int | float | bool):
                line[name] = value
        if record.exc_info and record.exc_info[0] is not None:
            exc_type, _, tb = record.exc_info
            line["error_type"] = exc_type.__name__
            line["stack"] = "".join(traceback.format_tb(tb))
        return orjson.dumps(line, default=str).decode()


_HANDLER_MARK = "_customer_graph_json"


def configure_logging(level: int | str = "INFO", stream: IO[str] | None = None) -> logging.Handler:
    """Send every log record to ``stream`` (stderr) as JSON lines; safe to call again.

    Quietens what would log URLs (httpx, httpcore log each request's full URL, which holds ids and
    e-mails) and uvicorn's access log (it logs query strings): ``RequestIdMiddleware`` logs requests.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _HANDLER_MARK, False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter())
    setattr(handler, _HANDLER_MARK, True)
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("httpx", "httpcore", "uvicorn.access", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    graphql = logging.getLogger("strawberry.execution")
    if not any(isinstance(f, _RedactGraphQLErrors) for f in graphql.filters):
        graphql.addFilter(_RedactGraphQLErrors())
    return handler


class _RedactGraphQLErrors(logging.Filter):
    """strawberry logs each GraphQL error as its text: the message (a resolver's exception text)
    and an excerpt of the query (which may hold literal e-mails or names). Keep only the field
    path; the exception's type and frames still come through ``exc_info``."""

    def filter(self, record: logging.LogRecord) -> bool:
        path = getattr(record.msg, "path", None)
        record.msg, record.args = "graphql error", ()
        if path:
            record.graphql_path = ".".join(str(part) for part in path)
        return True
