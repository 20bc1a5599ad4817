"""The slice views: the three-view layout and the input shown before a run.

After a run the Logic's ``showOutputs`` puts the anomaly map and the segmentation in the same views,
styled as in the Slicer module, so desktop and browser look alike.
"""

from __future__ import annotations

from trame_slicer.views import Layout, LayoutDirection, ViewLayoutDefinition

LAYOUT_ID = "axial-coronal-sagittal"


def three_slice_layout() -> Layout:
    return Layout(
        LayoutDirection.Horizontal,
        [
            ViewLayoutDefinition.axial_view(),
            ViewLayoutDefinition.coronal_view(),
            ViewLayoutDefinition.sagittal_view(),
        ],
    )


class Viewer:
    def __init__(self, slicer_app):
        self._app = slicer_app

    def show_background(self, volume_node) -> None:
        for view in self._app.view_manager.get_slice_views():
            view.set_background_volume_id(volume_node.GetID() if volume_node else None)
            view.set_foreground_volume_id(None)
        self._app.display_manager.reset_views()
