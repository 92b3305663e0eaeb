"""The request and response models' JSON Schema as OpenAPI 3.0 reads it.

BentoML serves an OpenAPI 3.0 document built from pydantic's JSON Schema (2020-12), keeping only
the first member of an ``anyOf``: ``int | None`` is published as a plain integer, and a strict
bound as a number where 3.0 wants a boolean. Validators and fuzzers (Schemathesis) that read the
document then refuse the schema or flag every null the service sends. These hooks, given to
pydantic as ``json_schema_extra``, write what survives BentoML's flattening in 3.0's terms."""

from __future__ import annotations

from typing import Any

_NULL = {"type": "null"}


def nullable_fields(schema: dict[str, Any]) -> None:
    """A model's optional properties marked ``nullable`` beside their ``anyOf`` (which BentoML
    cuts down to its first member)."""
    for prop in schema.get("properties", {}).values():
        if _NULL in prop.get("anyOf", []):
            prop["nullable"] = True


def strict_bounds(schema: dict[str, Any]) -> None:
    """A field's exclusive bounds as booleans beside ``minimum``/``maximum``."""
    for member in [schema, *schema.get("anyOf", [])]:
        for bound, plain in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
            value = member.get(bound)
            if isinstance(value, int | float) and not isinstance(value, bool):
                member[plain], member[bound] = value, True
