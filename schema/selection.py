"""Look-ahead at what a root field selects, so loads whose key is already known start at once."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    InlineFragmentNode,
    SelectionNode,
    SelectionSetNode,
)
from strawberry import Info


def selected_field_names(info: Info, *path: str) -> set[str]:
    """Names of the fields selected directly under the current field — or, with ``path``, under the
    fields of those names below it (``"edges", "node"``) — fragments followed."""
    raw = info._raw_info
    fragments = raw.fragments
    level = [node.selection_set for node in raw.field_nodes if node.selection_set is not None]
    for name in path:
        level = [
            f.selection_set
            for f in _fields(level, fragments)
            if f.name.value == name and f.selection_set is not None
        ]
    return {f.name.value for f in _fields(level, fragments)}


def _fields(
    selection_sets: list[SelectionSetNode], fragments: Mapping[str, FragmentDefinitionNode]
) -> list[FieldNode]:
    """The fields of ``selection_sets``, fragments followed (each named fragment once), in order.
    A loop, not a recursive closure: a closure that calls itself is a reference cycle, and this one
    held the request's resolve info (and through it the whole request) until the cyclic GC ran."""
    found: list[FieldNode] = []
    seen: set[str] = set()
    stack: list[Iterator[SelectionNode]] = [iter(s.selections) for s in reversed(selection_sets)]
    while stack:
        selection = next(stack[-1], None)
        if selection is None:
            stack.pop()
        elif isinstance(selection, FieldNode):
            found.append(selection)
        elif isinstance(selection, InlineFragmentNode):
            if selection.selection_set is not None:
                stack.append(iter(selection.selection_set.selections))
        elif isinstance(selection, FragmentSpreadNode):
            name = selection.name.value
            fragment = fragments.get(name)
            if fragment is not None and name not in seen:
                seen.add(name)
                stack.append(iter(fragment.selection_set.selections))
    return found
