"""Owners and privileges in the PostgreSQL fingerprint, with rollproof's own setup masked out.

`fingerprint.privilege_state` reads the owner and ACL of every object; `PrivilegeMask` (its
docstring has the argument) turns the state after rollproof's change-role setup back into the
state before it, so the fingerprint sees what the change did and nothing rollproof did;
`masked` applies it to a schema object's description.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

Item = tuple[str, str, str, bool]
"""One privilege: (grantee, privilege, grantor, grantable), roles by name, PUBLIC as 'PUBLIC'."""
State = dict[str, tuple[str | None, frozenset[Item] | None]]
"""Owner and ACL of every object that has them, by catalog identity (`pg_class:16390`,
`pg_class:16390:2` for a column), as read without a mask."""

CHANGE_ROLE = "(the change's role)"
"""What rollproof's change role is called in a fingerprint when it owns or holds something of
its own (an object a change created): the role's real name is new in every rehearsal."""


@dataclass(frozen=True, slots=True)
class PrivilegeMask:
    """Owners and privileges as they were before rollproof set up its change role.

    rollproof's setup (roles.grant_declared, and roles.own_table during a leg) hands declared
    objects to the change role, grants it SELECT and USAGE, and revokes PUBLIC's privileges in
    the clone. None of that is the change's doing, and none of it exists on the source, so the
    fingerprint must not see it. The mask is computed, not assumed: the privilege state is read
    right before and right after each setup step (in the same transaction), and the mask is
    exactly what turns the second back into the first:

    * an object rollproof handed to the role reads as owned by its previous owner, and the role
      in its ACL (the grantor of every privilege after ALTER ... OWNER) reads as that owner;
    * privileges the setup added (after that renaming) are removed, and those it revoked are
      put back.

    Anything the change itself does is left visible: a GRANT to another role, a REVOKE of a
    privilege rollproof did not revoke, an OWNER TO another role (the object is then no longer
    the role's, so no renaming applies), a new object (owned by the role: `CHANGE_ROLE`). The
    alternative, reading the privileges from a copy taken before setup, cannot see what the
    change does to them; dropping the role's entries from every ACL would hide a change's own
    grants to objects it owns. What the mask cannot show is a change revoking a PUBLIC
    privilege rollproof had already revoked in the clone: that REVOKE finds nothing to remove
    (see docs/fingerprint.md for why this is reported, not hidden).
    """

    role: str
    owners: Mapping[str, str] = field(default_factory=dict)
    layers: tuple[tuple[Mapping[str, frozenset[Item]], Mapping[str, frozenset[Item]]], ...] = ()

    def who(self, name: str, original: str | None) -> str:
        if name != self.role:
            return name
        return original if original is not None else CHANGE_ROLE

    def owner(self, ident: str, owner: str, original: str | None) -> str:
        return self.who(owner, original)

    def acl(self, ident: str, items: frozenset[Item], original: str | None) -> frozenset[Item]:
        out = frozenset(
            (self.who(g, original), p, self.who(gr, original), bool(o)) for g, p, gr, o in items
        )
        for added, removed in self.layers:
            out = (out - added.get(ident, frozenset())) | removed.get(ident, frozenset())
        return out

    def view(self, state: State) -> State:
        """`state` as this mask shows it."""
        out: State = {}
        for ident, (owner, items) in state.items():
            original = self._original(ident)
            out[ident] = (
                None if owner is None else self.owner(ident, owner, original),
                None if items is None else self.acl(ident, items, original),
            )
        return out

    def _original(self, ident: str) -> str | None:
        """The previous owner of the object `ident` is (or whose column it is)."""
        if ident in self.owners:
            return self.owners[ident]
        parent = ident.rsplit(":", 1)[0] if ident.count(":") > 1 else None
        return None if parent is None else self.owners.get(parent)

    def then(self, before: State, after: State) -> PrivilegeMask:
        """This mask extended by one more setup step that turned `before` into `after`."""
        seen = self.view(before)
        owners = dict(self.owners)
        for ident, (owner, _items) in after.items():
            prior = seen.get(ident, (None, None))[0]
            if owner == self.role and prior is not None and prior != CHANGE_ROLE:
                owners[ident] = prior
        step = PrivilegeMask(self.role, owners, self.layers)
        shown = step.view(after)
        added: dict[str, frozenset[Item]] = {}
        removed: dict[str, frozenset[Item]] = {}
        for ident in set(shown) | set(seen):
            now = shown.get(ident, (None, None))[1] or frozenset()
            was = seen.get(ident, (None, None))[1] or frozenset()
            if now - was:
                added[ident] = now - was
            if was - now:
                removed[ident] = was - now
        return PrivilegeMask(self.role, owners, (*self.layers, (added, removed)))


def masked(doc: Any, mask: PrivilegeMask | None, original: str | None = None) -> Any:
    """A description from the catalog queries as hashed: `_id` dropped, owners and ACLs read
    through `mask` (when there is one), ACLs as sorted lists."""
    if isinstance(doc, list):
        return [masked(x, mask, original) for x in doc]
    if not isinstance(doc, dict):
        return doc
    ident = doc.get("_id")
    if mask is not None and isinstance(ident, str):
        original = mask.owners.get(ident, original)
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if key == "_id":
            continue
        if key == "owner" and isinstance(value, str) and mask is not None:
            out[key] = mask.owner(str(ident), value, original)
        elif key == "acl" and isinstance(value, list):
            items = frozenset((str(g), str(p), str(gr), bool(o)) for g, p, gr, o in value)
            if mask is not None:
                items = mask.acl(str(ident), items, original)
            out[key] = sorted([list(i) for i in items])
        else:
            out[key] = masked(value, mask, original)
    return out
