"""Volume nodes ⇄ SimpleITK images, with exact geometry.

Slicer keeps a volume's geometry as an IJK→RAS matrix; SimpleITK as origin, spacing and a
direction matrix in ITK's LPS physical space. RAS is LPS with the first two axes negated, so for
the 4×4 IJK→RAS matrix ``M`` (columns = spacing-scaled axis directions, last column = origin):

* spacing = the lengths of M's first three columns,
* direction (LPS) = diag(-1, -1, 1) · M[:3, :3] / spacing,
* origin (LPS) = diag(-1, -1, 1) · M · (extent minimum, 1), the position of the first stored voxel.

Oblique and anisotropic grids are covered by the same formulas. A parent transform, if linear, is
composed in (``world=True``): the engine then sees where the volume is displayed.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import slicer
import vtk
from vtk.util import numpy_support

from UADBrainLib.errors import InputError

LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])


def matrix_to_array(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[matrix.GetElement(row, column) for column in range(4)] for row in range(4)])


def array_to_matrix(array: np.ndarray) -> vtk.vtkMatrix4x4:
    matrix = vtk.vtkMatrix4x4()
    for row in range(4):
        for column in range(4):
            matrix.SetElement(row, column, float(array[row, column]))
    return matrix


def transform_to_world(node) -> np.ndarray:
    """The node's parent transform as a 4×4 array (identity when it has none)."""
    transform_node = node.GetParentTransformNode()
    if transform_node is None:
        return np.eye(4)
    if not transform_node.IsTransformToWorldLinear():
        raise InputError(f"'{node.GetName()}' is under a non-linear transform — harden the transform "
                         "(Data module: right-click the volume, Harden transform) and run again.")
    matrix = vtk.vtkMatrix4x4()
    transform_node.GetMatrixTransformToWorld(matrix)
    return matrix_to_array(matrix)


def ijk_to_ras(node, world: bool = True) -> np.ndarray:
    """The volume's IJK→RAS matrix as a 4×4 array, in world coordinates by default."""
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    local = matrix_to_array(matrix)
    return transform_to_world(node) @ local if world else local


def image_from_array(array: np.ndarray, ijk_to_ras_matrix: np.ndarray, extent_min=(0, 0, 0)) -> sitk.Image:
    """A SimpleITK image of ``array`` ([k, j, i]) placed by an IJK→RAS matrix."""
    image = sitk.GetImageFromArray(array)
    axes = ijk_to_ras_matrix[:3, :3]
    spacing = np.linalg.norm(axes, axis=0)
    origin_ras = ijk_to_ras_matrix @ np.array([*extent_min, 1.0])
    image.SetSpacing([float(s) for s in spacing])
    image.SetDirection([float(d) for d in (LPS_FROM_RAS @ (axes / spacing)).ravel()])
    image.SetOrigin([float(o) for o in LPS_FROM_RAS @ origin_ras[:3]])
    return image


def array_view(image_data) -> np.ndarray:
    """The scalars of a single-component vtkImageData as a [k, j, i] numpy view (no copy)."""
    extent = image_data.GetExtent()
    shape = (extent[5] - extent[4] + 1, extent[3] - extent[2] + 1, extent[1] - extent[0] + 1)
    return numpy_support.vtk_to_numpy(image_data.GetPointData().GetScalars()).reshape(shape)


def image_from_volume_node(node, name: str | None = None, world: bool = True) -> sitk.Image:
    """A copy of a scalar volume node's voxels and geometry as a SimpleITK image."""
    name = name or node.GetName()
    image_data = node.GetImageData()
    if image_data is None or image_data.GetPointData().GetScalars() is None:
        raise InputError(f"{name}: the volume '{node.GetName()}' has no voxels — load the image again.")
    if image_data.GetNumberOfScalarComponents() != 1:
        raise InputError(f"{name}: '{node.GetName()}' has {image_data.GetNumberOfScalarComponents()} "
                         "components per voxel (colour or vector image) — give a single-channel MRI volume.")
    extent = image_data.GetExtent()
    return image_from_array(array_view(image_data).copy(), ijk_to_ras(node, world), extent[::2])


def set_volume_node_array(node, array: np.ndarray, reference_node) -> None:
    """Fill ``node`` with ``array`` ([k, j, i]) on ``reference_node``'s exact grid.

    The geometry is copied from the reference node itself (origin, spacing, directions, extent
    and parent transform), not recomputed, so the two grids are bit-identical.
    """
    reference_data = reference_node.GetImageData()
    image_data = vtk.vtkImageData()
    image_data.SetExtent(reference_data.GetExtent())
    vtk_array = numpy_support.numpy_to_vtk(np.ascontiguousarray(array).ravel(), deep=True)
    image_data.GetPointData().SetScalars(vtk_array)
    node.CopyOrientation(reference_node)
    node.SetAndObserveTransformNodeID(reference_node.GetTransformNodeID())
    node.SetAndObserveImageData(image_data)


def image_from_oriented_image_data(oriented, transform_node_owner=None) -> sitk.Image:
    """A vtkOrientedImageData (e.g. a segment's labelmap) as a SimpleITK image, in world space."""
    matrix = vtk.vtkMatrix4x4()
    oriented.GetImageToWorldMatrix(matrix)
    ijk_to_ras_matrix = matrix_to_array(matrix)
    if transform_node_owner is not None:
        ijk_to_ras_matrix = transform_to_world(transform_node_owner) @ ijk_to_ras_matrix
    return image_from_array(array_view(oriented).copy(), ijk_to_ras_matrix, oriented.GetExtent()[::2])


def mask_image_from_node(node) -> sitk.Image:
    """A brain mask from a labelmap (or scalar) volume, or from all segments of a segmentation."""
    if node.IsA("vtkMRMLSegmentationNode"):
        merged = slicer.vtkOrientedImageData()
        node.GenerateMergedLabelmapForAllSegments(merged)
        if merged.GetPointData().GetScalars() is None or not array_view(merged).any():
            raise InputError(f"brain mask: the segmentation '{node.GetName()}' is empty — paint the "
                             "brain in it, or leave the mask empty to compute one.")
        return image_from_oriented_image_data(merged, node)
    image = image_from_volume_node(node, "brain mask")
    if not sitk.GetArrayViewFromImage(image).any():
        raise InputError(f"brain mask: '{node.GetName()}' is empty — give a mask with the brain set "
                         "to nonzero, or leave the mask empty to compute one.")
    return image


def add_volume_from_image(scene, image: sitk.Image, name: str, class_name: str = "vtkMRMLScalarVolumeNode"):
    """A new volume node in ``scene`` holding a SimpleITK image with its geometry."""
    direction_ras = LPS_FROM_RAS @ np.array(image.GetDirection()).reshape(3, 3)
    matrix = np.eye(4)
    matrix[:3, :3] = direction_ras * np.array(image.GetSpacing())
    matrix[:3, 3] = LPS_FROM_RAS @ np.array(image.GetOrigin())
    image_data = vtk.vtkImageData()
    image_data.SetDimensions(image.GetSize())
    array = sitk.GetArrayFromImage(image)
    image_data.GetPointData().SetScalars(numpy_support.numpy_to_vtk(array.ravel(), deep=True))
    node = scene.AddNewNodeByClass(class_name, scene.GenerateUniqueName(name))
    node.SetIJKToRASMatrix(array_to_matrix(matrix))
    node.SetAndObserveImageData(image_data)
    node.CreateDefaultDisplayNodes()
    return node
