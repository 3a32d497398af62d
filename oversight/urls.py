"""/oversight/: the approval inbox, breakers, halts and the audit log (one module each)."""

from __future__ import annotations

from oversight.views import audit, breakers, halts, inbox

app_name = "oversight"
urlpatterns = [*inbox.urlpatterns, *breakers.urlpatterns, *halts.urlpatterns, *audit.urlpatterns]
