"""The three roles of DESIGN.md H6 as Django groups: viewer ⊂ operator ⊂ admin.

Synced after every migrate, so a new permission reaches its role without a data migration.
Superusers are admins. Checks ask for permissions, never for group names.
"""

from __future__ import annotations

from django.contrib.auth.models import Group, Permission

VIEW = (
    "loops.view_looprun",
    "loops.view_domain",
    "loops.view_blueprint",
    "loops.view_agent",
    "oversight.view_interrupt",
    "oversight.view_circuitbreaker",
    "oversight.view_halt",
    "oversight.view_auditevent",
    "oversight.view_alert",
    "realms.view_peer",
)
OPERATE = (
    "loops.operate_looprun",
    "oversight.decide_interrupt",
    "oversight.reset_circuitbreaker",
    "oversight.engage_halt",
    "oversight.acknowledge_alert",
)
# DESIGN.md H6: admins also halt everything, lift halts, and manage users and agents.
ADMINISTER = (
    "oversight.engage_global_halt",
    "oversight.lift_halt",
    "oversight.verify_auditevent",  # reads the whole audit log to check its hash chain
    "auth.add_user",
    "auth.change_user",
    "auth.view_user",
    "loops.add_agent",
    "loops.change_agent",
    # Realms (DESIGN.md section 8): only admins pair, approve, refuse, suspend and grant.
    "realms.pair_peer",
    "realms.change_grant",
)

ROLES = {
    "viewer": VIEW,
    "operator": VIEW + OPERATE,
    "admin": VIEW + OPERATE + ADMINISTER,
}


def role_for(perm: str) -> str:
    """The least role that grants perm, for a refusal that says what is needed."""
    return next((name for name, perms in ROLES.items() if perm in perms), "admin")


def roles_sync(**kwargs) -> None:
    for name, codenames in ROLES.items():
        group, _ = Group.objects.get_or_create(name=name)
        wanted: list[Permission] = []
        for dotted in codenames:
            app_label, codename = dotted.split(".")
            wanted += Permission.objects.filter(
                content_type__app_label=app_label, codename=codename
            )
        group.permissions.set(wanted)
