"""The Django admin shows oversight records read-only: every change goes through a service,
which checks the state, audits and notifies (STYLE.md B.5). The audit log cannot be changed
at all (the database refuses it, migration 0002)."""

from __future__ import annotations

from django.contrib import admin

from oversight.models import Alert, AuditEvent, CircuitBreaker, Halt, Interrupt, Notification


class ReadOnly(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnly):
    list_display = ["at", "actor_name", "verb", "target_type", "target_id", "note"]
    list_filter = ["verb", "target_type"]
    search_fields = ["actor_name", "note", "target_id"]


@admin.register(Halt)
class HaltAdmin(ReadOnly):
    list_display = ["scope", "reason", "created_by", "created_at", "lifted_by", "lifted_at"]


@admin.register(CircuitBreaker)
class CircuitBreakerAdmin(ReadOnly):
    list_display = ["name", "scope", "metric", "threshold", "state", "forced", "updated_at"]
    list_filter = ["state", "scope"]


@admin.register(Interrupt)
class InterruptAdmin(ReadOnly):
    list_display = ["pk", "run", "reason", "severity", "status", "decision", "deadline_at"]
    list_filter = ["status", "severity", "source"]


@admin.register(Alert)
class AlertAdmin(ReadOnly):
    list_display = ["created_at", "kind", "level", "audience", "title"]


@admin.register(Notification)
class NotificationAdmin(ReadOnly):
    list_display = ["alert", "channel", "status", "attempts", "next_attempt_at", "sent_at"]
