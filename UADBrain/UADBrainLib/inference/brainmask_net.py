"""The learned brain extractor: a small 3D U-Net that maps a raw head (any contrast) to a brain mask.

Trained on synthetic whole heads (``training/brainmask.py``), in the spirit of SynthStrip
(Hoopes et al. 2022). The network sees the head on a canonical grid at the bundle's spacing
(2 mm); its probability is resampled onto the input's exact native grid, thresholded and cleaned
(largest component, holes filled). Training and inference prepare intensities with the same
function, :func:`normalise_head`.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from ..bundle import BUNDLED_MODELS_DIR, METADATA_FILE, Bundle, load_task_model
from ..errors import ModelError
from .head_grid import head_on_grid, mask_on_native, probability_on_native

BRAINMASK_BUNDLE = "brainmask"
TASK = "brain_extraction"  # metadata "task" of brain-extraction bundles (not anomaly models)
SIZE_MULTIPLE = 16  # the U-Net downsamples 4 times
MAX_WINDOW = 192  # larger canonical grids are processed in overlapping windows of this size
# empty margin around the head at inference; training pads 0 to 2x this at random, so that the
# distance to the array border tells the network nothing about where the brain is
MARGIN_VOXELS = 8
NORMALISATION_PERCENTILES = (0.5, 99.5)


def build_network(network: dict):
    """The MONAI network named in a bundle's ``network`` entry (``{"name": ..., "args": {...}}``)."""
    from monai.networks import nets

    if network.get("name") != "UNet":
        raise ModelError(f"brain-mask network '{network.get('name')}' is not supported by this "
                         "version of UADBrain — update UADBrain or retrain the model.")
    return nets.UNet(**network["args"])


def normalise_head(array: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Map intensities to [0, 1] by robust percentiles of the imaged region (any contrast).

    ``valid`` marks voxels inside the scanned field of view; the rest are set to 0, as the
    padding around a volume is.
    """
    values = array[valid] if valid is not None else array
    low, high = np.percentile(values, NORMALISATION_PERCENTILES)
    scaled = (array - low) / max(float(high - low), 1e-6)
    scaled = np.clip(scaled, 0.0, 1.0).astype(np.float32)
    if valid is not None:
        scaled[~valid] = 0.0
    return scaled


def network_grid(image: sitk.Image, spacing_mm: float) -> tuple[sitk.Image, np.ndarray]:
    """The head on a canonical grid at ``spacing_mm``, normalised: (grid, array)."""
    grid, array, valid = head_on_grid(image, spacing_mm)
    return grid, normalise_head(array, valid)


def pad_for_network(array: np.ndarray, margin: int = 0,
                    multiple: int = SIZE_MULTIPLE) -> tuple[np.ndarray, tuple]:
    """Zero-pad ``margin`` voxels on every side, then each axis at its end up to a multiple;
    returns the padded array and the crop back to the input."""
    pads = [(margin, margin + (-(n + 2 * margin)) % multiple) for n in array.shape]
    return np.pad(array, pads), tuple(slice(margin, margin + n) for n in array.shape)


class BrainMaskModel:
    """A loaded brain-extraction bundle; :meth:`probability` and :meth:`mask` take any raw head."""

    def __init__(self, bundle: Bundle, device: str = "cpu"):
        bundle.require_task(TASK, "a brain-extraction model", BRAINMASK_BUNDLE)
        self.bundle = bundle
        self.device = device
        self.spacing_mm = float(bundle.preprocessing.get("spacing_mm", 2.0))
        self.threshold = float(bundle.metadata.get("postprocessing", {}).get("threshold", 0.5))
        # the empty border the network was trained to expect (bundles trained before margins: 0)
        self.margin = int(bundle.preprocessing.get("margin_voxels", MARGIN_VOXELS))
        self.network = bundle.load_weights_into(build_network(bundle.metadata["network"]), device)

    def grid_probability(self, array: np.ndarray) -> np.ndarray:
        """Brain probability for a normalised canonical array (any shape)."""
        import torch
        from monai.inferers import sliding_window_inference

        padded, crop = pad_for_network(array, self.margin)
        window = tuple(min(n, MAX_WINDOW) for n in padded.shape)
        with torch.inference_mode():
            tensor = torch.from_numpy(padded)[None, None].to(self.device)
            logits = sliding_window_inference(tensor, window, 1, self.network, overlap=0.25,
                                              mode="gaussian")
            probability = torch.sigmoid(logits)[0, 0].float().cpu().numpy()
        return probability[crop]

    def probability(self, image: sitk.Image) -> sitk.Image:
        """Brain probability on ``image``'s exact native grid."""
        grid, array = network_grid(image, self.spacing_mm)
        return probability_on_native(self.grid_probability(array), grid, image)

    def mask(self, image: sitk.Image) -> sitk.Image:
        """Binary brain mask (uint8) on ``image``'s exact native grid, one component, no holes
        (:func:`head_grid.mask_on_native`)."""
        grid, array = network_grid(image, self.spacing_mm)
        return mask_on_native(self.grid_probability(array), grid, image, self.threshold)


def learned_extractor_installed() -> bool:
    """Whether the bundled brain-extraction model is present (a missing folder, not a broken one)."""
    return (BUNDLED_MODELS_DIR / BRAINMASK_BUNDLE / METADATA_FILE).is_file()


def load_brainmask_model(bundle: Bundle | str | None = None, device: str = "cpu") -> BrainMaskModel:
    """The brain-extraction model (default: the bundled one), loaded once per bundle and device."""
    return load_task_model(BrainMaskModel, bundle, BRAINMASK_BUNDLE, device)


def learned_brain_mask(image: sitk.Image, device: str = "cpu", bundle=None) -> sitk.Image:
    """Brain mask of a raw head (any contrast, orientation, resolution) on its native grid."""
    return load_brainmask_model(bundle, device).mask(image)

