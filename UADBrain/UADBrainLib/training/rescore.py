"""``uadbrain rescore``: a trained reconstruction model with another anomaly score, as its own bundle.

The scores of ``inference/models/scores.py`` (residual, SSIM, ensembled SSIM, perceptual,
Mahalanobis) read the same reconstructions, so one trained network serves them all. Rescoring
copies the source bundle's metadata with the new scoring block, recalibrates it on healthy brains
(each score has its own healthy distribution) and writes a model card. A bundled source keeps its
weights where they are (``weights.bundle`` names it, with the same SHA-256); any other source's
weights file is copied. The bundle appears whole or not at all.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

from .. import __version__
from ..bundle import BUNDLED_MODELS_DIR, Bundle, read_bundle, write_metadata
from ..errors import InputError

RECONSTRUCTION_FAMILIES = ("dae", "vae", "skip-ae", "fanogan", "diffusion")
SCORE_KEYS = ("score", "feature_model", "feature_model_sha256", "feature_levels", "ensemble")
SCORE_NAMES = {"residual": "residual", "ssim": "SSIM", "ssim-ens": "ensembled SSIM", "perceptual": "perceptual",
               "mahalanobis": "Mahalanobis", "kl-combined": "residual x KL-gradient"}


def rescored_scoring(bundle: Bundle, score: str, feature_model: str | None = None, noise_levels=(),
                     seeds: int = 2) -> dict:
    """``bundle``'s scoring block with ``score`` and the settings it needs in place of its own."""
    from ..inference.models.diffusion import DEFAULT_SAMPLER, ensemble_for
    from ..inference.models.scores import score_refusal, score_settings

    if bundle.family not in RECONSTRUCTION_FAMILIES:
        raise InputError(f"model '{bundle.name}' is a {bundle.family} model; only reconstruction models "
                         f"({', '.join(RECONSTRUCTION_FAMILIES)}) can be rescored.")
    refusal = score_refusal(score, bundle.family) or (
        f"noise levels need a diffusion model, not a {bundle.family} model" if noise_levels and
        bundle.family != "diffusion" else None)
    if refusal:
        raise InputError(f"model '{bundle.name}': {refusal}.")
    scoring = {key: value for key, value in bundle.metadata.get("scoring", {}).items() if key not in SCORE_KEYS}
    scoring.update(score_settings(score, feature_model))
    if bundle.family == "diffusion":
        start = {**DEFAULT_SAMPLER, **scoring.get("sampler", {})}["start"]
        ensemble = ensemble_for(score, start, noise_levels, seeds)
        if ensemble:
            scoring["ensemble"] = ensemble
    return scoring


def _weights_of(bundle: Bundle, folder: Path) -> dict:
    """The new bundle's weights entry: shared with a bundled source, else a copy in ``folder``."""
    weights = dict(bundle.metadata["weights"])
    if weights.get("bundle") or bundle.path.resolve().parent == BUNDLED_MODELS_DIR.resolve():
        return {**weights, "bundle": weights.get("bundle", bundle.path.name)}
    shutil.copy2(bundle.verified_weights_path(), folder / weights["file"])
    return weights


def rescore(bundle: Bundle, out: Path, score: str, cases, calibration_description: str, device: str = "cpu",
            name: str | None = None, feature_model: str | None = None, noise_levels=(), seeds: int = 2,
            command: str = "", progress=None) -> Path:
    """Write ``bundle`` rescored with ``score`` to ``out``, calibrated on the healthy ``cases``."""
    from .calibrate import calibrate_model
    from .train import model_card

    out = Path(out)
    if out.exists():
        raise InputError(f"'{out}' exists — give a new folder for the rescored bundle.")
    metadata = copy.deepcopy(bundle.metadata)
    metadata["scoring"] = rescored_scoring(bundle, score, feature_model, noise_levels, seeds)
    name = name or out.name
    ensemble = metadata["scoring"].get("ensemble")
    scored = (f"the {SCORE_NAMES[score]} score" + (f" over {len(ensemble['noise_levels']) * ensemble['seeds']} "
                                                 "reconstructions" if ensemble else ""))
    source_title = bundle.metadata.get("title", bundle.name).split(" scored by ")[0]
    metadata.update(name=name, title=f"{source_title} scored by {scored}", calibration=None,
                    description=f"{bundle.metadata.get('description', '')} Rescored: {scored} "
                                f"(inference/models/scores.py) instead of the source's.")
    metadata["training"] = {**metadata.get("training", {}),
                            "rescored": {"from": bundle.name, "score": score, "command": command,
                                         "uadbrain_version": __version__}}
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        metadata["weights"] = _weights_of(bundle, partial)
        write_metadata(partial, metadata)
        calibration, measured = calibrate_model(read_bundle(partial), cases, device, calibration_description,
                                                progress=progress)
        metadata["calibration"] = calibration
        metadata["expected_runtime_s"] = {
            "cuda" if device.startswith("cuda") else "cpu": round(measured["seconds_per_case"], 1),
            "measured": f"calibration: {measured['cases']} cases of {'+'.join(bundle.contrasts)}, {device}"}
        write_metadata(partial, metadata)
        (partial / "README.md").write_text(model_card(metadata, []), encoding="utf-8")
        partial.rename(out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return out
