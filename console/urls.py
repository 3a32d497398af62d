from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from console import metrics, views
from console.api import api

console_patterns = (
    [path("", views.dashboard, name="dashboard")],
    "console",
)

urlpatterns = [
    path("", include(console_patterns)),
    path("loops/", include("loops.urls")),
    path("oversight/", include("oversight.urls")),
    path("api/v1/", api.urls),
    path("metrics", metrics.metrics, name="metrics"),  # Prometheus (README: Metrics and logs)
    path("accounts/", include("django.contrib.auth.urls")),
    path("admin/", admin.site.urls),
]

handler404 = "console.views.not_found"
