"""Checking a model bundle's ``metadata.json`` against the JSON Schema shipped with the code.

The schema is ``Resources/Schemas/metadata.schema.json`` (JSON Schema 2020-12). It is checked here
by a small validator of the keywords it uses (type, enum, required, properties, propertyNames,
additionalProperties as a schema, items, minItems, maxItems, uniqueItems, pattern, minimum,
exclusiveMinimum, anyOf), so the Slicer module needs no extra package; a test checks that the
``jsonschema`` package agrees on every bundled model and on broken examples.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache

from .resources import RESOURCES_DIR

METADATA_SCHEMA = RESOURCES_DIR / "Schemas" / "metadata.schema.json"
_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


@lru_cache(maxsize=1)
def metadata_schema() -> dict:
    return json.loads(METADATA_SCHEMA.read_text(encoding="utf-8"))


def schema_errors(value, schema: dict | None = None, where: str = "") -> list[str]:
    """What in ``value`` breaks ``schema`` (default: the metadata schema), as readable lines."""
    schema = metadata_schema() if schema is None else schema
    place = where or "metadata"
    if "anyOf" in schema:
        if all(schema_errors(value, option, where) for option in schema["anyOf"]):
            return [f"{place} is {_show(value)}, which is none of the allowed forms"]
        return []
    if "enum" in schema and value not in schema["enum"]:
        return [f"{place} is {_show(value)}, not one of {', '.join(map(_show, schema['enum']))}"]
    expected = schema.get("type")
    if expected is not None and not _is_type(value, expected):
        article = "an" if expected[0] in "aeiou" else "a"
        return [f"{place} should be {article} {expected}, not {_show(value)}"]
    errors = []
    if isinstance(value, dict):
        errors += [f"{place} lacks '{key}'" for key in schema.get("required", []) if key not in value]
        properties = schema.get("properties", {})
        for key, item in value.items():
            path = f"{where}.{key}" if where else key
            if "propertyNames" in schema:
                errors += [f"{place} has the key {error.partition(' is ')[2]}"
                           for error in schema_errors(key, schema["propertyNames"], path)]
            subschema = properties.get(key, schema.get("additionalProperties"))
            if isinstance(subschema, dict):
                errors += schema_errors(item, subschema, path)
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0) or len(value) > schema.get("maxItems", len(value)):
            errors.append(f"{place} has {len(value)} items")
        if schema.get("uniqueItems") and len({json.dumps(v, sort_keys=True) for v in value}) < len(value):
            errors.append(f"{place} repeats an item")
        for index, item in enumerate(value):
            errors += schema_errors(item, schema.get("items", {}), f"{place}[{index}]")
    if isinstance(value, str) and "pattern" in schema and not re.search(schema["pattern"], value):
        errors.append(f"{place} is {_show(value)}, which is not of the expected form")
    if _is_type(value, "number"):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{place} is {value}, below {schema['minimum']}")
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            errors.append(f"{place} is {value}, not above {schema['exclusiveMinimum']}")
    return errors


def _is_type(value, expected: str) -> bool:
    if expected == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if expected == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, _TYPES[expected])


def _show(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:39] + "…"
