"""The page: controls in a side drawer, three slice views, the lesion table below them.

Elements the browser tests use carry ``data-testid`` attributes.
"""

from __future__ import annotations

from trame.widgets import html
from trame.widgets import vuetify3 as v
from trame_vuetify.ui.vuetify3 import SinglePageWithDrawerLayout

from . import adapter

DOWNLOAD_LABELS = {
    "segmentation_nrrd": "Segmentation (.seg.nrrd)",
    "segmentation_nifti": "Segmentation (NIfTI)",
    "anomaly_map": "Anomaly map (NIfTI)",
    "lesions_csv": "Lesions (CSV)",
}


def testid(name: str) -> list[str]:
    return [f'data-testid="{name}"']


def build_ui(server, layout_manager, download_trigger: str) -> SinglePageWithDrawerLayout:
    ctrl = server.controller
    with SinglePageWithDrawerLayout(server, full_height=True) as layout:
        layout.title.set_text("UADBrain — anomaly detection in brain MRI")
        layout.drawer.width = 380
        layout.footer.hide()
        with layout.drawer:
            with html.Div(classes="pa-3 d-flex flex-column ga-3"):
                _inputs_panel(ctrl)
                _run_panel(ctrl)
                _post_processing_panel()
                _downloads_panel(download_trigger)
        with layout.content:
            with html.Div(classes="d-flex flex-column", style="height: calc(100vh - 64px);"):
                with html.Div(style="flex: 0 0 auto;"):
                    v.VAlert(
                        v_if=("error_message",),
                        text=("error_message",),
                        type="error",
                        closable=True,
                        density="compact",
                        click_close=ctrl.dismiss_error,
                        raw_attrs=testid("error"),
                    )
                    # what the engine reported about the run (a contrast not scored, Otsu instead
                    # of the calibration, an image that does not look like a brain MRI)
                    v.VAlert(
                        v_for="(warning, index) in run_warnings",
                        key="index",
                        text=("warning",),
                        type="warning",
                        density="compact",
                        raw_attrs=testid("warning"),
                    )
                # A fixed height: resizing slice views after a fit would crop the image.
                with html.Div(style="flex: 0 0 62vh;", raw_attrs=testid("views")):
                    layout_manager.initialize_layout_grid(layout)
                _lesion_table(ctrl)
    return layout


def _inputs_panel(ctrl) -> None:
    html.Div("Inputs", classes="text-subtitle-1")
    v.VFileInput(
        v_model=("upload_files", None),
        label="Upload volumes (NIfTI, NRRD, MHA)",
        multiple=True,
        density="compact",
        disabled=("running",),
        raw_attrs=testid("upload"),
    )
    v.VBtn("Load example", click=ctrl.load_example, disabled=("running",), raw_attrs=testid("load-example"))
    with html.Div(v_for="volume in volumes", key="volume.id", classes="d-flex align-center ga-2"):
        html.Span("{{ volume.name }}", classes="text-body-2 flex-grow-1 text-truncate", title=("volume.name",))
        v.VSelect(
            v_model=("volume.contrast",),
            items=("contrasts",),
            density="compact",
            hide_details=True,
            style="min-width: 104px; max-width: 104px;",
            update_modelValue=(ctrl.set_contrast, "[volume.id, $event]"),
            raw_attrs=[':data-testid="`contrast-${volume.name}`"'],
        )
        v.VTextField(  # "Run every subject" groups by it; read from the file name, changed here
            model_value=("volume.subject",),
            density="compact",
            hide_details=True,
            style="min-width: 84px; max-width: 84px;",
            title="Subject: the volumes of one subject run together (Run every subject)",
            change=(ctrl.set_subject, "[volume.id, $event.target.value]"),
            raw_attrs=[':data-testid="`subject-${volume.name}`"'],
        )
        v.VBtn(icon="mdi-close", size="small", variant="text", click=(ctrl.remove_volume, "[volume.id]"),
               raw_attrs=[':data-testid="`remove-${volume.name}`"'])


def _run_panel(ctrl) -> None:
    html.Div("Model", classes="text-subtitle-1")
    with html.Div(classes="d-flex ga-2"):
        v.VSelect(label="Model", v_model=("model",), items=("models",), density="compact", hide_details=True)
        v.VSelect(label="Device", v_model=("device",), items=("devices",), density="compact", hide_details=True)
    v.VSelect(label="Brain extraction (raw heads)", v_model=("brain_mask_method",), items=("brain_mask_methods",),
              density="compact", hide_details=True, raw_attrs=testid("brain-mask-method"))
    v.VTextField(label="Age (years; for models conditioned on age)", v_model=("age",), type="number", min=0,
                 max=125, density="compact", hide_details=True, clearable=True, raw_attrs=testid("age"))
    with html.Div(classes="d-flex ga-2"):
        v.VBtn("Run", color="primary", click=ctrl.run, disabled=("running || !volumes.length",),
               raw_attrs=testid("run"))
        v.VBtn("Run every subject", click=ctrl.run_sets, disabled=("running || volumes.length < 2",),
               title="Group the volumes per subject (the field beside each volume, read from its file name: "
                     "case2_flair, case2_t1 are subject case2) and run the model on each in turn",
               raw_attrs=testid("run-sets"))
        v.VBtn("Cancel", click=ctrl.cancel, disabled=("!running",), raw_attrs=testid("cancel"))
    v.VProgressLinear(v_model=("progress",), height=8, color="primary", raw_attrs=testid("progress"))
    html.Div("{{ stage }}", classes="text-caption", raw_attrs=testid("stage"))
    html.Div("ran on {{ ran_on }}", v_if=("ran_on && !running",), classes="text-caption", raw_attrs=testid("ran-on"))
    with html.Div(v_for="row in set_rows", key="row.index", classes="d-flex align-center ga-2",
                  raw_attrs=[':data-testid="`set-${row.name}`"']):
        html.Span("{{ row.name }}: {{ row.status }}", classes="text-body-2 flex-grow-1",
                  style=("{ fontWeight: row.name === shown_set ? 'bold' : 'normal' }",))
        v.VBtn("Show", size="small", variant="text", v_if=("row.ok && !running",), click=(ctrl.show_set, "[row.index]"),
               raw_attrs=[':data-testid="`show-${row.name}`"'])


def _post_processing_panel() -> None:
    html.Div("Segmentation", classes="text-subtitle-1")
    v.VSlider(
        v_model=("threshold",),
        min=("threshold_min",),
        max=("threshold_max",),
        step=("threshold_step",),
        label="Threshold",
        hide_details=True,
        disabled=("!has_result || running",),
        raw_attrs=testid("threshold"),
    )
    html.Div("threshold {{ Number(threshold).toFixed(3) }}", classes="text-caption",
             raw_attrs=testid("threshold-value"))
    with html.Div(classes="d-flex ga-2"):
        v.VSelect(label="Median kernel", v_model=("median",), items=("medians",), density="compact",
                  hide_details=True, disabled=("running",), raw_attrs=testid("median"))
        v.VTextField(label="Min lesion size (mm³)", v_model=("min_size_mm3",), type="number", min=0,
                     density="compact", hide_details=True, disabled=("running",), raw_attrs=testid("min-size"))
    with html.Div(classes="d-flex ga-2"):
        v.VTextField(label="Healthy false-positive rate", v_model=("fpr",), type="number", min=0, max=1,
                     step=0.001, density="compact", hide_details=True, disabled=("running",),
                     title="Share of healthy brain voxels the calibrated threshold flags (calibrated models)",
                     raw_attrs=testid("fpr"))
        v.VTextField(label="Brain-mask erosion (mm)", v_model=("erosion_mm",), type="number", min=0,
                     density="compact", hide_details=True, disabled=("running",),
                     title="Ignore this rim inside the brain mask (empty: the model's default)",
                     raw_attrs=testid("erosion"))


def _downloads_panel(download_trigger: str) -> None:
    html.Div("Downloads", classes="text-subtitle-1")
    for kind, label in DOWNLOAD_LABELS.items():
        file_name = adapter.DOWNLOAD_FILE_NAMES[kind]
        v.VBtn(
            label,
            prepend_icon="mdi-download",
            variant="tonal",
            size="small",
            disabled=("!has_result || running",),
            click=f"utils.download('{file_name}', trigger('{download_trigger}', ['{kind}']), "
            "'application/octet-stream')",
            raw_attrs=testid(f"download-{kind}"),
        )


def _lesion_table(ctrl) -> None:
    with html.Div(style="flex: 1 1 auto; min-height: 0; overflow-y: auto;", classes="pa-2"):
        html.Div("{{ summary }}", classes="text-subtitle-2", raw_attrs=testid("summary"))
        with v.VTable(density="compact", v_if=("lesions.length",), raw_attrs=testid("lesions")):
            with html.Thead():
                with html.Tr():
                    for title in ("#", "volume (ml)", "max score", "centroid RAS (mm)"):
                        html.Th(title)
            with html.Tbody():
                with html.Tr(
                    v_for="lesion in lesions",
                    key="lesion.index",
                    click=(ctrl.jump_to_lesion, "[lesion.index]"),
                    style="cursor: pointer;",
                    raw_attrs=testid("lesion-row"),
                ):
                    html.Td("{{ lesion.index + 1 }}")
                    html.Td("{{ lesion.volume_ml.toFixed(3) }}")
                    html.Td("{{ lesion.max_score.toFixed(3) }}")
                    html.Td("{{ lesion.centroid_ras.join(', ') }}")
