"""What the security tests share: a fingerprint of everything the console's writes can change,
so that a rejected request can be shown to have changed nothing (DESIGN.md H7)."""

from __future__ import annotations

from django.apps import apps

# Columns that change without anyone writing on purpose: a token's last use is stamped by
# the authentication itself, whatever the request then does; an audit row's seal comes from
# the sealer after the row's commit, whichever request wrote it (oversight.chain).
VOLATILE = {
    "loops.apitoken": {"last_used_at"},
    "oversight.auditevent": {"chain_position", "chain_prev", "chain_hash"},
}


def fingerprint(labels: tuple[str, ...] = ("loops", "oversight")) -> dict[str, list[tuple]]:
    """Every row of every model of the apps, in primary-key order."""
    state: dict[str, list[tuple]] = {}
    for label in labels:
        for model in apps.get_app_config(label).get_models():
            skip = VOLATILE.get(model._meta.label_lower, set())
            fields = [f.attname for f in model._meta.concrete_fields if f.attname not in skip]
            state[model._meta.label_lower] = list(model.objects.order_by("pk").values_list(*fields))
    return state


def changed(before: dict[str, list[tuple]], after: dict[str, list[tuple]]) -> list[str]:
    """The models whose rows differ, for an assertion message that says where."""
    return sorted(name for name in before if before[name] != after.get(name))
