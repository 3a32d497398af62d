"""The realm's A2A Agent Card (A2A 1.0, via a2a-sdk's types and signer) and the peers'.

This realm's exported blueprints are its skills; the federation extension
`urn:loopstacks:federation:v1` carries what A2A's card has no field for: the realm's slug
and URL, its keys (as JWKs) and each skill's input and output schemas. The card is signed
with the realm's key (a detached JWS, EdDSA, the key id its fingerprint), and a peer's card
is believed only if its signature holds under the key it lists."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

import httpx
from a2a.client.card_resolver import parse_agent_card
from a2a.types import (
    AgentCapabilities,
    AgentCard,
    AgentExtension,
    AgentInterface,
    AgentSkill,
    HTTPAuthSecurityScheme,
    SecurityRequirement,
    SecurityScheme,
    StringList,
)
from a2a.utils.constants import PROTOCOL_VERSION_CURRENT, TransportProtocol
from a2a.utils.signing import (
    InvalidSignaturesError,
    NoSignatureError,
    create_agent_card_signer,
    create_signature_verifier,
)
from cryptography.hazmat.primitives import serialization
from google.protobuf.json_format import MessageToDict
from google.protobuf.struct_pb2 import Struct

from common.refusals import Refused
from loops.declare import BLUEPRINTS
from realms import wire
from realms.identity import b64url_decode, fingerprint_of, me, public_key_from

EXTENSION = "urn:loopstacks:federation:v1"
CARD_PATH = "/.well-known/agent-card.json"
TIMEOUT = 5.0


@dataclass(frozen=True)
class CardInfo:
    """What pairing needs of a realm: who it says it is, and the key that proves it."""

    slug: str
    name: str
    url: str
    public_key: str
    fingerprint: str

    @classmethod
    def from_message(cls, info: Any) -> CardInfo:
        """From a pairing message's `realm` (its signature was verified with this key)."""
        if not isinstance(info, dict):
            raise Refused(400, "invalid_request", "a pairing message describes its realm")
        try:
            key = str(info["public_key"])
            public_key_from(key)
            slug = str(info["slug"])
        except (KeyError, TypeError, ValueError) as exc:
            raise Refused(
                400, "invalid_request", f"the realm's description is bad: {exc}"
            ) from None
        return cls(
            slug=slug[:60],
            name=str(info.get("name", slug))[:120],
            url=str(info.get("url", ""))[:300],
            public_key=key,
            fingerprint=fingerprint_of(b64url_decode(key)),
        )


def exported() -> list[str]:
    return sorted(name for name, spec in BLUEPRINTS.items() if spec.export and not spec.remote)


def _schemas(name: str) -> dict[str, Any]:
    spec = BLUEPRINTS[name]
    last = spec.phases[-1] if spec.phases else None
    return {
        "input_schema": spec.input_schema or {"type": "object"},
        "output_schema": (last.output_schema if last else None) or {},
    }


@cache
def own_card() -> dict[str, Any]:
    """The card as served: built once a process (the declarations are fixed at start)."""
    identity = me()
    params = Struct()
    params.update(
        {
            "realm": {"slug": identity.slug, "name": identity.name, "url": identity.url},
            "keys": [
                {
                    "kid": identity.fingerprint,
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "x": identity.public_key,
                }
            ],
            "skills": {name: _schemas(name) for name in exported()},
        }
    )
    card = AgentCard(
        name=identity.name,
        description=f"Loop Stack Console realm {identity.slug}: its exported loop blueprints",
        version="1.0.0",
        supported_interfaces=[
            AgentInterface(
                url=f"{identity.url}/a2a",
                protocol_binding=TransportProtocol.JSONRPC,
                protocol_version=PROTOCOL_VERSION_CURRENT,
            )
        ],
        capabilities=AgentCapabilities(
            streaming=False,
            push_notifications=True,
            extensions=[
                AgentExtension(
                    uri=EXTENSION,
                    description="Loop stacks across realms: origin, path and TTL, depth and "
                    "budget bounds, idempotency keys, bids, halts and decisions",
                    required=False,
                    params=params,
                )
            ],
        ),
        default_input_modes=["application/json"],
        default_output_modes=["application/json"],
        skills=[
            AgentSkill(
                id=name,
                name=name,
                description=BLUEPRINTS[name].description or name,
                tags=[BLUEPRINTS[name].domain, BLUEPRINTS[name].kind],
                input_modes=["application/json"],
                output_modes=["application/json"],
            )
            for name in exported()
        ],
        # A stock A2A client of a "client" peer sends its bearer token (realms.a2a).
        security_schemes={
            "bearer": SecurityScheme(
                http_auth_security_scheme=HTTPAuthSecurityScheme(scheme="Bearer")
            )
        },
        security_requirements=[SecurityRequirement(schemes={"bearer": StringList()})],
    )
    private_pem = identity.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    create_agent_card_signer(
        signing_key=private_pem,
        # No "jku": the SDK would write it as null; the key is in the card itself.
        protected_header={"kid": identity.fingerprint, "alg": "EdDSA", "typ": "JOSE"},  # type: ignore[typeddict-item]
    )(card)
    return MessageToDict(card)


def fetch_card(url: str) -> CardInfo:
    """The realm at `url`, from its signed card; Refused if unreachable or not believable."""
    base = url.rstrip("/")
    try:
        httpx.URL(base)
    except httpx.InvalidURL as exc:
        raise Refused(400, "invalid_request", f"{base!r} is not a URL: {exc}") from None
    try:
        response = wire.http().get(f"{base}{CARD_PATH}", timeout=TIMEOUT)
        response.raise_for_status()
        served = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise Refused(
            404, "no_realm", f"no realm answers at {base}: {CARD_PATH} gave {exc}"
        ) from None
    return verify_card(served, base)


def verify_card(served: dict[str, Any], base: str) -> CardInfo:
    def bad(why: str) -> Refused:
        return Refused(400, "bad_card", f"the agent card at {base} {why}")

    try:
        card = parse_agent_card(served)
        extension = next(e for e in card.capabilities.extensions if e.uri == EXTENSION)
        params = MessageToDict(extension.params)
        realm, [jwk] = params["realm"], params["keys"]
        key = str(jwk["x"])
        public = public_key_from(key)
    except (StopIteration, KeyError, TypeError, ValueError) as exc:
        raise bad(f"is not a Loop Stack Console realm's ({exc!r})") from None
    fingerprint = fingerprint_of(b64url_decode(key))
    if jwk.get("kid") != fingerprint:
        raise bad("names a key id that is not its key's fingerprint")
    public_pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # A kid other than the card's own key gets no key (b""), so its signature cannot hold.
    verify = create_signature_verifier(
        lambda kid, jku: public_pem if kid == fingerprint else b"", algorithms=["EdDSA"]
    )
    try:
        verify(card)
    except (InvalidSignaturesError, NoSignatureError) as exc:
        raise bad(f"is not signed by the key it lists ({exc})") from None
    return CardInfo(
        slug=str(realm.get("slug", ""))[:60],
        name=str(realm.get("name", ""))[:120],
        url=str(realm.get("url", base)).rstrip("/")[:300],
        public_key=key,
        fingerprint=fingerprint,
    )
