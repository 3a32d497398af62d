"""/oversight/: the approval inbox, breakers, halts, the audit log and alert acknowledgement
(one module each)."""

from __future__ import annotations

from oversight.views import alerts, audit, breakers, decision, halts, inbox

app_name = "oversight"
urlpatterns = [
    *inbox.urlpatterns,
    *decision.urlpatterns,
    *breakers.urlpatterns,
    *halts.urlpatterns,
    *audit.urlpatterns,
    *alerts.urlpatterns,
]
