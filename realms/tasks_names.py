"""The realms tasks' names, for the services and leaf helpers that send them by name
(STYLE.md B.2: nothing below the tasks imports a tasks module)."""

from __future__ import annotations

DELIVER = "realms.tasks.deliver"
FRAME_REFUSED = "realms.tasks.frame_refused"
