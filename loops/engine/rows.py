"""Model instances made from the engine's own rows, without the ORM's query compilation: the
columns of a model in the order of its concrete fields, and its JSON decoded as the model
would (Django has psycopg hand jsonb over as text)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from django.db import models


class Rows[M: models.Model]:
    """How `model`'s rows read in a statement where the table is aliased `alias`."""

    def __init__(self, model: type[M], alias: str, fields: Sequence[str] = ()) -> None:
        concrete = model._meta.concrete_fields
        chosen = [f for f in concrete if not fields or f.attname in fields]
        self.model, self.width = model, len(chosen)
        self.columns = ", ".join(f"{alias}.{f.column}" for f in chosen)
        self.attnames = [f.attname for f in chosen]
        self._json = [i for i, f in enumerate(chosen) if isinstance(f, models.JSONField)]

    def build(self, values: Sequence[Any]) -> M:
        """An instance from `width` values in the order of `columns` (others deferred)."""
        values = list(values)
        for i in self._json:
            if isinstance(values[i], str):
                values[i] = json.loads(values[i])
        return self.model.from_db("default", self.attnames, values)
