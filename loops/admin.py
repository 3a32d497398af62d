from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.utils import timezone

from console.auth import tokens_revoke, tokens_working
from loops.models import Agent, ApiToken, Blueprint, Domain, LoopRun


@admin.register(Domain)
class DomainAdmin(admin.ModelAdmin):
    list_display = ["slug", "name"]


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    list_display = ["name", "domain", "adapter", "status", "heartbeat_at"]
    list_filter = ["domain", "adapter", "status"]


@admin.register(Blueprint)
class BlueprintAdmin(admin.ModelAdmin):
    """Blueprints are declared in Python; the admin shows them, with their policy."""

    list_display = ["name", "kind", "domain", "version", "updated_at"]
    list_filter = ["domain", "kind"]
    readonly_fields = ["name", "kind", "domain", "version", "description", "spec", "updated_at"]

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(LoopRun)
class LoopRunAdmin(admin.ModelAdmin):
    list_display = ["id", "blueprint", "domain", "depth", "state", "phase", "iteration", "cost"]
    list_filter = ["domain", "state"]
    raw_id_fields = ["parent", "root", "spawned_by"]


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """API tokens, read-only and never with their hash: created by `manage.py token`, revoked
    here or there, each change audited (console.auth)."""

    list_display = ["id", "user", "agent", "created_at", "last_used_at", "revoked_at", "works"]
    list_filter = ["agent__domain"]
    list_select_related = ["user", "agent__domain"]
    fields = readonly_fields = ("user", "agent", "created_at", "last_used_at", "revoked_at")
    actions = ["revoke"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # revoke instead: the row and its audit trail stay

    def has_revoke_permission(self, request) -> bool:
        # The admin role manages people and agents (DESIGN.md H6), so their credentials too.
        return request.user.has_perms(["auth.change_user", "loops.change_agent"])

    @admin.display(boolean=True, description="works")
    def works(self, token: ApiToken) -> bool:
        return token.revoked_at is None or token.revoked_at > timezone.now()

    @admin.action(permissions=["revoke"], description="Revoke selected tokens")
    def revoke(self, request, queryset: QuerySet[ApiToken]) -> None:
        ids = list(queryset.filter(tokens_working(timezone.now())).values_list("pk", flat=True))
        revoked = tokens_revoke(actor=request.user, tokens=ids, note="revoked in the admin")
        if revoked:
            self.message_user(request, f"Revoked {len(revoked)} token(s).", messages.SUCCESS)
        else:
            self.message_user(request, "None of those tokens worked; nothing changed.")
