"""Per-document memos: work done once per parsed document, found again by the document's identity.

Strawberry's ``ParserCache`` hands out the same ``DocumentNode`` object for the same query text, so
what depends only on the document (its validation, its measured limits) is looked up by
``id(document)``: no hashing of the syntax tree per request (strawberry's own ``ValidationCache`` keys
an ``lru_cache`` by the document, and hashing a customer-360 document costs more than the lookup saves).
The document is kept with its value, so its id cannot be reused by another object while cached.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import Generic, TypeVar

from graphql import DocumentNode, GraphQLError
from strawberry.extensions import SchemaExtension
from strawberry.schema.schema import validate_document

V = TypeVar("V")


class DocumentMemo(Generic[V]):
    """Up to ``size`` values, one per document (by identity), least recently used out first."""

    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self._entries: OrderedDict[int, tuple[DocumentNode, V]] = OrderedDict()

    def get(self, document: DocumentNode) -> V | None:
        entry = self._entries.get(id(document))
        if entry is None or entry[0] is not document:
            return None
        self._entries.move_to_end(id(document))
        return entry[1]

    def put(self, document: DocumentNode, value: V) -> V:
        self._entries[id(document)] = (document, value)
        self._entries.move_to_end(id(document))
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._entries)


class ValidationMemo(SchemaExtension):
    """Validates each parsed document once (the schema's rules are fixed); later requests reuse the
    errors (usually none). Replaces strawberry's ``ValidationCache`` (see the module doc)."""

    def __init__(self, memo: DocumentMemo[list[GraphQLError]]) -> None:
        self.memo = memo

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        document = context.graphql_document
        if document is not None and context.validation_rules:
            errors = self.memo.get(document)
            if errors is None:
                errors = self.memo.put(
                    document, validate_document(context.schema._schema, document, context.validation_rules)
                )
            context.pre_execution_errors = errors
        yield
