"""The bundled ICBM152 2009a template as a common frame: affine registration of a brain to it.

Models that score a voxel against what healthy brains show *at the same place* (the voxel-wise
normative model, the feature-density model) keep their statistics on the template's 2 mm grid and
bring them onto a scan through this registration; the coarse ``atlas`` brain mask uses it too.
A brain is registered by its outline (its mask), which no contrast or lesion changes; a raw head
by mutual information, which works across contrasts.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import SimpleITK as sitk

from .resources import RESOURCES_DIR

TEMPLATE_PATH = RESOURCES_DIR / "Atlas" / "icbm152_2009a_t1_brain_2mm.nii.gz"


@lru_cache(maxsize=1)
def template_image() -> sitk.Image:
    return sitk.ReadImage(str(TEMPLATE_PATH), sitk.sitkFloat32)


def canonical_image(array: np.ndarray, spacing) -> sitk.Image:
    """A canonical ``[S, P, L]`` array as an image (identity direction, origin 0): enough for a
    registration that starts by aligning centres of mass."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(array, dtype=np.float32))
    image.SetSpacing([float(s) for s in spacing])
    return image


TEMPLATE_BRAIN_THRESHOLD = 20  # template intensity (0-255) that separates its brain from the background halo
SHAPE_SMOOTHING_MM = 2.0  # Gaussian sigma applied to both masks: a smooth outline registers smoothly


def _affine_registration(metric: str, sampling: float) -> sitk.ImageRegistrationMethod:
    registration = sitk.ImageRegistrationMethod()
    if metric == "mutual_information":
        registration.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    else:
        registration.SetMetricAsMeanSquares()
    registration.SetMetricSamplingStrategy(registration.RANDOM)
    registration.SetMetricSamplingPercentage(sampling, seed=1)
    registration.SetInterpolator(sitk.sitkLinear)
    registration.SetOptimizerAsRegularStepGradientDescent(
        learningRate=1.0, minStep=1e-4, numberOfIterations=200, relaxationFactor=0.6)
    registration.SetOptimizerScalesFromPhysicalShift()
    registration.SetShrinkFactorsPerLevel([4, 2, 1])
    registration.SetSmoothingSigmasPerLevel([2.0, 1.0, 0.0])
    return registration


def _register(fixed: sitk.Image, moving: sitk.Image, metric: str, sampling: float) -> sitk.Transform:
    initial = sitk.CenteredTransformInitializer(
        fixed, moving, sitk.AffineTransform(3), sitk.CenteredTransformInitializerFilter.MOMENTS)
    registration = _affine_registration(metric, sampling)
    registration.SetInitialTransform(initial, inPlace=False)
    return registration.Execute(fixed, moving)


def register_template(image: sitk.Image) -> sitk.Transform:
    """The affine transform from ``image``'s physical points to the template's, by mutual
    information of intensities: a raw head, any contrast."""
    return _register(sitk.Cast(image, sitk.sitkFloat32), template_image(), "mutual_information", 0.05)


@lru_cache(maxsize=1)
def _template_shape() -> sitk.Image:
    brain = sitk.Cast(template_image() > TEMPLATE_BRAIN_THRESHOLD, sitk.sitkFloat32)
    return sitk.SmoothingRecursiveGaussian(brain, SHAPE_SMOOTHING_MM)


def register_brain(mask: np.ndarray, spacing) -> sitk.Transform:
    """The affine transform from a canonical brain mask's physical points to the template's, by
    the mean squared difference of the two brains' smoothed outlines. The outline does not depend
    on the contrast, nor on a lesion inside the brain; on synthetic brains it aligns deep grey
    matter better than mutual information of the intensities does (pairwise Dice after
    registration 0.52 against 0.44, white matter 0.51 against 0.50)."""
    fixed = sitk.SmoothingRecursiveGaussian(canonical_image(mask.astype(np.float32), spacing), SHAPE_SMOOTHING_MM)
    return _register(fixed, _template_shape(), "mean_squares", 0.1)


def to_template(array: np.ndarray, spacing, transform: sitk.Transform, is_label: bool = False) -> np.ndarray:
    """A canonical array resampled onto the template's grid (``transform`` from :func:`register_brain`)."""
    interpolator = sitk.sitkNearestNeighbor if is_label else sitk.sitkLinear
    resampled = sitk.Resample(canonical_image(array, spacing), template_image(), transform.GetInverse(),
                              interpolator, 0.0, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(resampled)


def from_template(array: np.ndarray, shape, spacing, transform: sitk.Transform, start=(0, 0, 0)) -> np.ndarray:
    """A template-grid array (or its box from index ``start``, ``[i, j, k]``) resampled onto a
    canonical grid of ``shape`` and ``spacing``; points beyond it are extrapolated from its edge."""
    template = template_image()
    image = sitk.GetImageFromArray(np.ascontiguousarray(array, dtype=np.float32))
    image.SetSpacing(template.GetSpacing())
    image.SetDirection(template.GetDirection())
    image.SetOrigin(template.TransformIndexToPhysicalPoint([int(i) for i in start]))
    reference = canonical_image(np.zeros(shape, np.float32), spacing)
    resampled = sitk.Resample(image, reference, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32,
                              useNearestNeighborExtrapolator=True)
    return sitk.GetArrayFromImage(resampled)


def template_indices(shape, spacing, transform: sitk.Transform) -> np.ndarray:
    """Where each voxel of a canonical grid lands in the template: continuous indices ``[..., (i, j, k)]``."""
    reference = canonical_image(np.zeros(shape, np.float32), spacing)
    displacement = sitk.TransformToDisplacementField(transform, sitk.sitkVectorFloat64, reference.GetSize(),
                                                     reference.GetOrigin(), reference.GetSpacing(),
                                                     reference.GetDirection())
    k, j, i = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    points = np.stack([i, j, k], axis=-1) * np.asarray(spacing, np.float64) + sitk.GetArrayFromImage(displacement)
    template = template_image()
    direction = np.array(template.GetDirection()).reshape(3, 3)
    return ((points - np.array(template.GetOrigin())) @ direction) / np.array(template.GetSpacing())
