from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from console import metrics, views
from console.api import api
from realms.views import wire

console_patterns = (
    [path("", views.dashboard, name="dashboard")],
    "console",
)

urlpatterns = [
    path("", include(console_patterns)),
    path("loops/", include("loops.urls")),
    path("oversight/", include("oversight.urls")),
    path("realms/", include("realms.urls")),
    path("api/v1/", api.urls),
    # The realm's public wire (DESIGN.md section 8): its card, A2A JSON-RPC, status pushes.
    path(".well-known/agent-card.json", wire.agent_card, name="agent-card"),
    path("a2a", wire.a2a, name="a2a"),
    path("a2a/push", wire.push, name="a2a-push"),
    path("metrics", metrics.metrics, name="metrics"),  # Prometheus (README: Metrics and logs)
    path("accounts/", include("django.contrib.auth.urls")),
    path("admin/", admin.site.urls),
]

handler404 = "console.views.not_found"
