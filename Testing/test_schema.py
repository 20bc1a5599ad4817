"""metadata.json is checked against the JSON Schema shipped in Resources/Schemas; the engine's own
small validator must agree with the reference implementation (the jsonschema package)."""

import copy
import json

import jsonschema
import pytest

from UADBrainLib.bundle import BUNDLED_MODELS_DIR, METADATA_FILE
from UADBrainLib.schema import metadata_schema, schema_errors

BUNDLED = sorted(p for p in BUNDLED_MODELS_DIR.iterdir() if (p / METADATA_FILE).is_file())


def reference_valid(metadata) -> bool:
    return jsonschema.Draft202012Validator(metadata_schema()).is_valid(metadata)


def test_the_schema_is_a_valid_json_schema():
    jsonschema.Draft202012Validator.check_schema(metadata_schema())


@pytest.mark.parametrize("bundle", BUNDLED, ids=lambda p: p.name)
def test_every_bundled_model_is_valid(bundle):
    metadata = json.loads((bundle / METADATA_FILE).read_text(encoding="utf-8"))
    assert schema_errors(metadata) == [] and reference_valid(metadata)


BREAKAGES = {
    "no name": lambda m: m.pop("name"),
    "contrasts a string": lambda m: m.update(contrasts="flair"),
    "unknown contrast": lambda m: m.update(contrasts=["flair", "pd"]),
    "repeated contrast": lambda m: m.update(contrasts=["flair", "flair"]),
    "median not a kernel": lambda m: m.update(postprocessing={"median": 4}),
    "negative minimum size": lambda m: m.update(postprocessing={"min_size_mm3": -1}),
    "spacing zero": lambda m: m.update(preprocessing={"spacing_mm": 0}),
    "spacing of two axes": lambda m: m.update(preprocessing={"spacing_mm": [1, 1]}),
    "bias correction a string": lambda m: m.update(preprocessing={"bias_correction": "yes"}),
    "unknown fusion": lambda m: m.update(scoring={"contrast_fusion": "median"}),
    "short checksum": lambda m: m.update(weights={"file": "w.pt", "sha256": "abc"}),
    "weights outside the bundle": lambda m: m.update(weights={"file": "../w.pt", "sha256": "0" * 64}),
    "weights without checksum": lambda m: m.update(weights={"file": "w.pt"}),
    "name with a slash": lambda m: m.update(name="a/b"),
    "schema version a string": lambda m: m.update(schema_version="1"),
    "lone-contrast route for an unknown contrast": lambda m: m.update(scoring={"members_when_alone": {"pd": "dae"}}),
    "lone-contrast route not a name": lambda m: m.update(scoring={"members_when_alone": {"t2": 3}}),
}


@pytest.mark.parametrize("breakage", BREAKAGES)
def test_broken_metadata_is_refused_by_both_validators(breakage):
    metadata = copy.deepcopy(json.loads((BUNDLED_MODELS_DIR / "threshold" / METADATA_FILE).read_text(encoding="utf-8")))
    BREAKAGES[breakage](metadata)
    assert schema_errors(metadata) and not reference_valid(metadata)
