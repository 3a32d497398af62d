"""The regional pharmacy's agents (the demo's second realm): the dispensing network and its
nightly extract, the consultant pharmacist who reviews a hospital's interaction screen with
the community fills added, and the pharmacist on call who paces the review. Computed by
demo.pharmacy; declared by demo.pharmacy_declarations, in the pharmacy realm only.
"""

from __future__ import annotations

import random

from django.conf import settings

from demo import faults, pharmacy
from demo.agents.base import DemoAgent, given, phase_results
from loops.declare import python_agent
from loops.messages import Bid, Decline, Outcome, Task


def hazard(task: Task) -> bool:
    """Community records are where surprises are: three times the demo's escalation rate."""
    rng = faults.rng_for(task, "dispensing-hazard")
    return rng.random() < min(1.0, 3 * settings.DEMO_ESCALATION_RATE)


class DispensingLookup(DemoAgent):
    source = ""
    lag_days = 0  # fills younger than this are not in the record yet

    def work(self, task: Task) -> Outcome:
        drugs = list(given(task).get("drugs") or [])
        fills = pharmacy.dispensing_record(
            faults.rng_for(task, "dispensing"), drugs, hazard=hazard(task)
        )
        fills = [f for f in fills if f["days_ago"] >= self.lag_days]
        output = {
            "patient": given(task).get("patient"),
            "drugs": drugs,
            "fills": fills,
            "source": self.source,
        }
        return Outcome(output=output, cost=self.cost, rationale=f"{len(fills)} community fills")


@python_agent("demo.dispensing-network")
class DispensingNetwork(DispensingLookup):
    confidence, system, cost = 0.9, "dispensing-network", 0.001
    source = "regional dispensing network (live)"


@python_agent("demo.dispensing-extract")
class DispensingExtract(DispensingLookup):
    """The stand-in while the network's breaker is open: last night's extract."""

    confidence, lag_days = 0.65, 2
    source = "nightly dispensing extract (a day behind)"


def _reviewed(task: Task) -> dict:
    looked_up = phase_results(task)["dispensing"]
    return pharmacy.review(looked_up["drugs"], looked_up["fills"])


@python_agent("demo.consultant-pharmacist")
class ConsultantPharmacist(DemoAgent):
    """Reviews the hospital's list with the community fills. Sure of agreement; unsure of a
    severe interaction that rests on a fill the patient may have stopped: its bid's
    confidence then goes under the blueprint's floor, and a person decides (a policy
    interrupt). Rejected, it takes the fill as stopped."""

    def bid(self, task: Task) -> Bid | Decline | None:
        sure = bool(faults.rejected(task))
        return Bid(confidence=pharmacy.SURE if sure else pharmacy.confidence(_reviewed(task)))

    def work(self, task: Task) -> Outcome:
        reviewed = _reviewed(task)
        if said := faults.rejected(task):
            reviewed = pharmacy.fill_stopped(reviewed, said)
        return Outcome(output=reviewed, rationale=reviewed["recommendation"])


@python_agent("demo.pharmacist-on-call")
class PharmacistOnCall(DemoAgent):
    """Busy at the counter: mostly no answer within the bid window, so the review waits the
    window out (DEMO_PACE_SECONDS), as each hospital domain's second opinion does."""

    def bid(self, task: Task) -> Bid | Decline | None:
        if settings.DEMO_PACE_SECONDS == 0 or random.random() < 0.25:  # noqa: S311
            return Decline("the consultant's review is enough")
        return None

    def work(self, task: Task) -> Outcome:
        return Outcome(output=None)
