"""/realms/: the Realms page and its admin actions (realms.views.pages)."""

from __future__ import annotations

from realms.views import pages

app_name = "realms"
urlpatterns = pages.urlpatterns
