"""Parsed and validated documents, cached across requests — bounded by size, and only once valid.

A request's query text is looked up first; a hit hands out the same ``DocumentNode`` (so what
depends only on the document — its measured limits — is kept with it, in the entry's ``memo``) and
skips parsing and validation, which it already passed. A miss is parsed; then a *precheck* bounds
the work validation would do (``gateway/limits.py``: graphql-core's overlapping-fields rule is
quadratic in the fields sharing a response name), and only then is it validated. A document enters
the cache only when it validated, so documents made up to fill memory (unique, invalid, or with a
varied comment) cost their own request and nothing after it.

The cache is bounded by bytes of query text, not by entries: a parsed document takes about 200 times
its text in memory (measured: ~3 MB for a 15 KB document), so ``max_bytes`` of 1 MiB bounds the
trees to roughly 200 MB. A document larger than a tenth of the budget is never cached. Requests
without a valid token neither read nor fill it (their documents are tiny by the limits).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from graphql import DocumentNode, GraphQLError
from strawberry.extensions import SchemaExtension
from strawberry.types import ExecutionContext

# (document, execution context) → the error that refuses it before validation, or None
Precheck = Callable[[DocumentNode, ExecutionContext], GraphQLError | None]


@dataclass(slots=True)
class CachedDocument:
    document: DocumentNode
    size: int
    memo: dict[str, object] = field(default_factory=dict)  # per-document facts other extensions keep


class DocumentCache:
    """Valid documents by query text, least recently used out first, within ``max_bytes`` of text."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max(0, max_bytes)
        self.bytes = 0
        self._by_text: OrderedDict[str, CachedDocument] = OrderedDict()
        self._by_document: dict[int, CachedDocument] = {}

    def get(self, text: str) -> CachedDocument | None:
        entry = self._by_text.get(text)
        if entry is not None:
            self._by_text.move_to_end(text)
        return entry

    def put(self, text: str, document: DocumentNode) -> None:
        size = len(text)
        if size > self.max_bytes // 10 or text in self._by_text:
            return
        entry = CachedDocument(document, size)
        self._by_text[text] = entry
        self._by_document[id(document)] = entry
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, old = self._by_text.popitem(last=False)
            del self._by_document[id(old.document)]
            self.bytes -= old.size

    def memo(self, document: DocumentNode) -> dict[str, object] | None:
        """The cached document's memo (by identity); None when the document is not cached."""
        entry = self._by_document.get(id(document))
        return entry.memo if entry is not None and entry.document is document else None

    def __len__(self) -> int:
        return len(self._by_text)


class CachedDocuments(SchemaExtension):
    """Per request: a cached document skips parsing and validation; a new one is prechecked, then
    validated, then cached when valid."""

    def __init__(self, cache: DocumentCache, precheck: Precheck | None = None) -> None:
        self.cache = cache
        self.precheck = precheck
        self._hit = False

    def _cacheable(self) -> bool:
        context = self.execution_context
        return context.query is not None and getattr(context.context, "principal", None) is not None

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        if context.graphql_document is None and self._cacheable():
            entry = self.cache.get(context.query)  # type: ignore[arg-type]
            if entry is not None:
                context.graphql_document = entry.document
                self._hit = True
        yield

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        document = context.graphql_document
        if document is None:
            yield
            return
        if self._hit:
            context.pre_execution_errors = []  # it validated when it was cached
            yield
            return
        refusal = self.precheck(document, context) if self.precheck is not None else None
        if refusal is not None:
            context.pre_execution_errors = [refusal]
        yield  # strawberry validates here, unless refused
        if refusal is None and context.pre_execution_errors == [] and self._cacheable():
            self.cache.put(context.query, document)  # type: ignore[arg-type]
