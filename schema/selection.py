"""Look-ahead at what a root field selects, so loads whose key is already known start at once."""

from __future__ import annotations

from graphql import FieldNode, FragmentSpreadNode, InlineFragmentNode, SelectionSetNode
from strawberry import Info


def selected_field_names(info: Info, *path: str) -> set[str]:
    """Names of the fields selected directly under the current field — or, with ``path``, under the
    fields of those names below it (``"edges", "node"``) — fragments followed."""
    raw = info._raw_info

    def fields(selection_sets: list[SelectionSetNode]) -> list[FieldNode]:
        found: list[FieldNode] = []
        seen: set[str] = set()

        def walk(selection_set: SelectionSetNode | None) -> None:
            if selection_set is None:
                return
            for selection in selection_set.selections:
                if isinstance(selection, FieldNode):
                    found.append(selection)
                elif isinstance(selection, InlineFragmentNode):
                    walk(selection.selection_set)
                elif isinstance(selection, FragmentSpreadNode):
                    name = selection.name.value
                    fragment = raw.fragments.get(name)
                    if fragment is not None and name not in seen:
                        seen.add(name)
                        walk(fragment.selection_set)

        for selection_set in selection_sets:
            walk(selection_set)
        return found

    level = [node.selection_set for node in raw.field_nodes if node.selection_set is not None]
    for name in path:
        level = [
            f.selection_set for f in fields(level) if f.name.value == name and f.selection_set is not None
        ]
    return {f.name.value for f in fields(level)}
