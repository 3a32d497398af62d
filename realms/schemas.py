"""The bodies of the realms endpoints (realms.api), added to DESIGN.md section 5's contract
as section 8 lists them."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from ninja import Field, Schema
from pydantic import ConfigDict

FINGERPRINT = r"^SHA256:[A-Za-z0-9+/]{43}$"


class PeerOut(Schema):
    slug: str
    name: str
    kind: str
    url: str
    fingerprint: str
    status: Literal["pending", "approved", "suspended", "refused"]
    we_approved: bool
    they_approved: bool
    reachable: bool
    unreachable_since: datetime | None
    latency_ms: float | None
    last_seen_at: datetime | None


class RealmsOut(Schema):
    """This realm's own identity, and each peer it knows."""

    slug: str
    name: str
    url: str
    fingerprint: str
    peers: list[PeerOut]


class PairIn(Schema):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(
        pattern=r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[!-~]*)?$",
        max_length=300,
        description="the realm's base URL, as its admins give it",
    )
    fingerprint: str = Field(pattern=FINGERPRINT)


class SuspendIn(Schema):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field("", max_length=2000)


class GrantBody(Schema):
    """One direction of a pairing: inbound (what the peer may ask of us) or outbound (what
    our loops may ask of it). Omitted, or blueprints "": nothing is allowed."""

    model_config = ConfigDict(extra="forbid")
    blueprints: str = Field("", max_length=200, description="comma-separated name globs")
    max_depth: int = Field(1, ge=1, le=32)
    budget: float | None = Field(None, ge=0, le=1e9, description="per call; null: no cap")
    rate_per_minute: int = Field(60, ge=1, le=100_000)
    answer_interrupts: bool = False
    trace: Literal["summary", "full"] = "summary"
    lease_s: int = Field(
        60, ge=5, le=86_400, description="inbound: the caller unreachable this long pauses its work"
    )


class GrantsIO(Schema):
    model_config = ConfigDict(extra="forbid")
    inbound: GrantBody | None = None
    outbound: GrantBody | None = None
