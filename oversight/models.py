# Import direction (STYLE.md B.2): oversight.models may import loops.models; loops.models
# never imports oversight. The models arrive with interrupts, breakers and halts.
from __future__ import annotations
