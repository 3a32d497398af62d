"""/loops/: domains with their live stacks, runs, and the agent registry."""

from __future__ import annotations

from loops.views import agents, stacks

app_name = "loops"
urlpatterns = [*stacks.urlpatterns, *agents.urlpatterns]
