"""Ensemble: per contrast, the most surprising of several calibrated models.

The bundle names its member models (bundled names, or folders relative to the bundle) and, per
contrast, which members score it. Each member runs on its own model grid and its raw scores are
turned into its own healthy-calibrated units (``calibration.surprise``); the ensemble's channel
for a contrast is the voxel-wise maximum over that contrast's members (``scoring.member_fusion``
"max": any member surprised), or their minimum ("min": all members agree). The ensemble has its own
healthy calibration on top, so its calibrated threshold keeps its meaning. When all given
contrasts go to one member, the pipeline hands the scan to that member (:meth:`for_contrasts`):
the ensemble then picks, per contrast, the model that works best on it. ``scoring.members_when_alone``
routes a contrast given alone to another member than the one it has beside other contrasts (a
model that works best on one contrast may fuse worse with the others' members).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ...bundle import find_bundle
from ...errors import ModelError
from ...geometry import canonical_reference, resample_like
from ..calibration import fusion, surprise
from .base import AnomalyModel, ModelOutput


def member_bundle(reference: str, ensemble_path: Path):
    local = ensemble_path / reference
    return find_bundle(local if (local / "metadata.json").is_file() else reference)


def member_names(scoring: dict, contrasts) -> list[str]:
    """The members an ensemble's ``scoring`` block runs for these contrasts."""
    contrasts = list(contrasts)
    alone = scoring.get("members_when_alone", {})
    if len(contrasts) == 1 and contrasts[0] in alone:
        return [alone[contrasts[0]]]
    routes = scoring.get("members_per_contrast", {})
    return list(dict.fromkeys(name for contrast in contrasts for name in routes.get(contrast, [])))


def member_reference(bundle, name: str) -> str:
    """Where the member ``name`` of an ensemble bundle is (a bundled name or a folder); refused
    when the ensemble routes contrasts to a model it does not name."""
    try:
        return bundle.metadata["members"][name]
    except KeyError:
        raise ModelError(f"ensemble '{bundle.name}' routes contrasts to '{name}', which is not one of "
                         "its members — name it under \"members\" or fix its scoring.") from None


def routed_bundles(bundle, contrasts) -> list:
    """The bundles an ensemble bundle would run for these contrasts, the members of nested
    ensembles included (metadata only)."""
    names = member_names(bundle.metadata.get("scoring", {}), contrasts)
    found = []
    for name in names:
        member = member_bundle(member_reference(bundle, name), bundle.path)
        found += [member, *(routed_bundles(member, contrasts) if member.family == "ensemble" else [])]
    return found


def runs_a_network(bundle, contrasts) -> bool:
    """Whether scoring ``contrasts`` with ``bundle`` runs a network: its own weights, or those of
    a member it routes them to (metadata only)."""
    routed = routed_bundles(bundle, contrasts) if bundle.metadata.get("family") == "ensemble" else []
    return any(b.metadata.get("weights") for b in [bundle, *routed])


def _on_spacing(array: np.ndarray, spacing, target_spacing, is_label: bool = False):
    """A canonical ``[S, P, L]`` array resampled onto a canonical grid at ``target_spacing``.

    Returns the resampled array and the two SimpleITK grids (source, target) for the way back.
    """
    source = sitk.GetImageFromArray(array.astype(np.uint8 if is_label else np.float32))
    source.SetSpacing([float(s) for s in spacing])  # SimpleITK order (L, P, S), as the pipeline passes it
    target = canonical_reference(source, target_spacing)
    resampled = resample_like(source, target, is_label=is_label)
    return sitk.GetArrayFromImage(resampled), source, target


class EnsembleModel(AnomalyModel):
    def __init__(self, bundle, device: str = "cpu"):
        super().__init__(bundle, device)
        self.routes: dict[str, list[str]] = bundle.metadata["scoring"]["members_per_contrast"]
        self.fuse_members = fusion(bundle.metadata["scoring"].get("member_fusion", "max"))
        self.member_bundles = {}
        for name in sorted({*(n for names in self.routes.values() for n in names),
                            *bundle.metadata["scoring"].get("members_when_alone", {}).values()}):
            member_reference(bundle, name)  # every route names a member
        for name, reference in bundle.metadata["members"].items():
            found = member_bundle(reference, bundle.path)
            if not (found.calibration or {}).get("channels"):
                raise ModelError(f"ensemble '{bundle.name}': member '{name}' has no healthy calibration — "
                                 "calibrate it first (uadbrain calibrate).")
            self.member_bundles[name] = found
        self.members = {}  # loaded on first use: a FLAIR-only run of a mixed ensemble needs no torch

    def member(self, name: str) -> AnomalyModel:
        if name not in self.members:
            from . import load_model

            self.members[name] = load_model(self.member_bundles[name], self.device)
        return self.members[name]

    def for_contrasts(self, contrasts) -> AnomalyModel:
        """When every given contrast goes to the same single member, that member: its own map and
        healthy calibration, exactly as if it had been chosen by name. (Measured: the ensemble's
        second calibration on top of thresholding's moved MS FLAIR Dice at the calibrated
        threshold from 0.311 to 0.148.) Several contrasts stay with the ensemble when the member
        would fuse them differently; a contrast given alone goes to its ``members_when_alone``
        member, if it has one."""
        contrasts = list(contrasts)
        names = member_names(self.bundle.metadata["scoring"], contrasts)
        routes = {tuple(self.routes.get(contrast, [])) for contrast in contrasts}
        if len(names) == 1 and (len(contrasts) == 1 or (
                len(routes) == 1 and self.member_bundles[names[0]].contrast_fusion == self.bundle.contrast_fusion)):
            return self.member(names[0])
        return self

    def predict(self, images, brain_mask, spacing, progress=None, is_cancelled=None):
        """``spacing`` is the grid's (L, P, S) spacing as the pipeline passes it (SimpleITK order)."""
        surprises: dict[str, list[np.ndarray]] = {}
        reconstructions = {}
        names = [n for n in self.member_bundles if any(n in self.routes.get(c, []) for c in images)]
        for index, name in enumerate(names):
            member = self.member(name)
            wanted = {c: image for c, image in images.items() if name in self.routes.get(c, [])}
            report = (lambda f, m, i=index: progress((i + f) / len(names), m)) if progress else None
            output = self._run_member(member, wanted, brain_mask, spacing, report, is_cancelled)
            tables = member.bundle.calibration["channels"]
            for contrast, raw in output.contrast_maps.items():
                surprises.setdefault(contrast, []).append(surprise(raw, tables[contrast]))
            reconstructions.update(output.reconstructions)
        maps = {c: np.where(brain_mask, self.fuse_members(m), 0.0).astype(np.float32) for c, m in surprises.items()}
        return ModelOutput(contrast_maps=maps, reconstructions=reconstructions)

    def _run_member(self, member, images, brain_mask, spacing, progress, is_cancelled) -> ModelOutput:
        wanted_spacing = member.bundle.spacing_mm
        if wanted_spacing is None or np.allclose(wanted_spacing, spacing, atol=1e-3):
            return member.predict(images, brain_mask, spacing, progress, is_cancelled)
        mask, source, target = _on_spacing(brain_mask, spacing, wanted_spacing, is_label=True)
        resampled = {c: _on_spacing(image, spacing, wanted_spacing)[0] for c, image in images.items()}
        output = member.predict(resampled, mask > 0, target.GetSpacing(), progress, is_cancelled)

        def back(array):
            image = sitk.GetImageFromArray(array.astype(np.float32))
            image.CopyInformation(target)
            return sitk.GetArrayFromImage(resample_like(image, source))

        return ModelOutput(contrast_maps={c: back(a) for c, a in output.contrast_maps.items()},
                           reconstructions={c: back(a) for c, a in output.reconstructions.items()})
