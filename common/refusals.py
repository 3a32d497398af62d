"""The one error a service raises to refuse what it was asked (DESIGN.md H7): the HTTP status
it means, the contract's error code and a sentence a person can act on. The API answers it in
one place (console.api), the pages show its sentence, the commands print it."""

from __future__ import annotations


class Refused(Exception):
    def __init__(self, status: int, code: str, detail: str) -> None:
        self.status, self.code, self.detail = status, code, detail
        super().__init__(detail)
