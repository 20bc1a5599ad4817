"""The lesion table node: one row per lesion, largest anomaly score first (the engine's order)."""

from __future__ import annotations

import vtk

# column name, vtk array class, unit, description, value from an engine Lesion
COLUMNS = (
    ("Lesion", vtk.vtkIntArray, "", "lesion number (1 = highest anomaly score)", lambda l: l.label),
    ("Volume", vtk.vtkDoubleArray, "mL", "lesion volume", lambda l: l.volume_ml),
    ("Voxels", vtk.vtkIntArray, "", "number of voxels", lambda l: l.voxels),
    ("Max score", vtk.vtkDoubleArray, "", "highest anomaly score in the lesion", lambda l: l.max_score),
    ("Mean score", vtk.vtkDoubleArray, "", "mean anomaly score in the lesion", lambda l: l.mean_score),
    ("R", vtk.vtkDoubleArray, "mm", "centroid, right (world RAS)", lambda l: l.centroid_ras[0]),
    ("A", vtk.vtkDoubleArray, "mm", "centroid, anterior (world RAS)", lambda l: l.centroid_ras[1]),
    ("S", vtk.vtkDoubleArray, "mm", "centroid, superior (world RAS)", lambda l: l.centroid_ras[2]),
)
CENTROID_COLUMNS = ("R", "A", "S")


def create_table_node(scene, name: str):
    node = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    node.SetLocked(True)  # the engine's measurements; not meant to be edited by hand
    table = node.GetTable()
    for column_name, array_class, unit, description, _ in COLUMNS:
        array = array_class()
        array.SetName(column_name)
        table.AddColumn(array)
        node.SetColumnUnitLabel(column_name, unit)
        node.SetColumnDescription(column_name, description)
    return node


def fill_table(node, lesions) -> None:
    """Replace the table's rows by the lesions (columns keep their units and descriptions)."""
    table = node.GetTable()
    for column_name, _, _, _, value in COLUMNS:
        array = table.GetColumnByName(column_name)
        array.SetNumberOfTuples(len(lesions))
        for row, lesion in enumerate(lesions):
            array.SetValue(row, value(lesion))
        array.Modified()
    table.Modified()
    node.Modified()
