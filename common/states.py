"""State machines on models (STYLE.md B.4): each keeps its legal moves in a TRANSITIONS table,
and its move method (`move_to`) is the only code that changes its state."""

from __future__ import annotations

from typing import Any

from common.refusals import Refused


class TransitionRejected(Refused):
    """An illegal state change, refused as 409 wrong_state: the sentence names the object,
    its state and the move asked for."""

    def __init__(self, noun: str, pk: Any, state: str, *, to: str) -> None:
        self.to = to
        super().__init__(409, "wrong_state", f"{noun} {pk} is {state}; it cannot become {to}")


def check_move(
    transitions: dict[str, frozenset[str]], noun: str, pk: Any, state: str, to: str
) -> None:
    if to not in transitions[state]:
        raise TransitionRejected(noun, pk, state, to=to)
