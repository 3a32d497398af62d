from __future__ import annotations

from django.contrib import admin

from loops.models import Agent, Blueprint, Domain, LoopRun


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
