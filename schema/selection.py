"""Look-ahead at what a root field selects, so loads whose key is already known start at once."""

from __future__ import annotations

from graphql import FieldNode, FragmentSpreadNode, InlineFragmentNode, SelectionSetNode
from strawberry import Info


def selected_field_names(info: Info) -> set[str]:
    """Names of the fields selected directly under the current field (fragments followed)."""
    raw = info._raw_info
    names: set[str] = set()
    seen: set[str] = set()

    def walk(selection_set: SelectionSetNode | None) -> None:
        if selection_set is None:
            return
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                names.add(selection.name.value)
            elif isinstance(selection, InlineFragmentNode):
                walk(selection.selection_set)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                fragment = raw.fragments.get(name)
                if fragment is not None and name not in seen:
                    seen.add(name)
                    walk(fragment.selection_set)

    for node in raw.field_nodes:
        walk(node.selection_set)
    return names
