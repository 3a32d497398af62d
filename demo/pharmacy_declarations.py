"""The regional pharmacy realm's demo (README: The demo, federated): the second realm that
`./bin/console --federated` starts names this module in its LOOP_DECLARATIONS instead of
demo.declarations. It starts nothing by itself; the hospital's interaction checks call it.

    second-opinion (exported)   dispensing → review
      dispensing                  the patient's community fills (the dispensing network, or
                                  its nightly extract while the network's breaker is open)
      review                      the consultant pharmacist: the hospital's list with the
                                  fills added; a severe interaction resting on a fill is
                                  unsure, under the confidence floor, and waits for a person
"""

from __future__ import annotations

from django.conf import settings

from demo import pharmacy
from demo.agents import pharmacy as _agents  # noqa: F401 — registers the implementations
from loops.declare import agent, blueprint, breaker, domain
from loops.specs import Escalate, Exits, Phase, Policy, Retry

DOMAIN = "pharmacy"
BLUEPRINT = "second-opinion"

domain(DOMAIN, "Regional Pharmacy", "Second opinions for the region's hospitals (demo).")

for _name, _capability in (
    ("dispensing-network", "dispensing-records"),
    ("dispensing-extract", "dispensing-records"),
    ("consultant-pharmacist", "pharmacist-review"),
    ("pharmacist-on-call", "pharmacist-review"),
):
    agent(DOMAIN, _name, implementation=f"demo.{_name}", capabilities=(_capability,))

blueprint(
    BLUEPRINT,
    kind="sub",
    domain=DOMAIN,
    phases=[
        Phase("dispensing", task_type="demo.dispensing", capabilities=("dispensing-records",)),
        Phase("review", task_type="demo.review", capabilities=("pharmacist-review",)),
    ],
    selection="all",
    merge="highest_confidence",
    policy=Policy(
        exits=Exits(quality=("validated",), max_iterations=10),
        retry=Retry(max_attempts=3, base_ms=250, cap_ms=2000),
        # An unsure review (a severe interaction resting on a community fill) waits for a
        # pharmacist here; the hospital that asked may answer too (its grant allows it).
        escalation=Escalate(
            confidence_below=pharmacy.CONFIDENCE_FLOOR,
            deadline_s=settings.DEMO_DECISION_SECONDS,
            default_action="reject",
        ),
    ),
    bid_window_ms=round(settings.DEMO_PACE_SECONDS * 1000),
    gather_deadline_ms=round((settings.DEMO_PACE_SECONDS + 3 * settings.DEMO_SLOW_SECONDS) * 1000)
    + 30_000,
    export=True,
    input_schema={
        "type": "object",
        "required": ["drugs"],
        "properties": {"drugs": {"type": "array", "items": {"type": "string"}}},
    },
    description="A hospital's interaction screen checked against community dispensing.",
)

breaker(
    "dispensing-network-failures",
    scope="agent:pharmacy/dispensing-network",
    metric="consecutive_failures",
    threshold=3,
    cooldown_s=30,
)
