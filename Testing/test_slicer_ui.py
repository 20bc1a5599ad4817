"""The Slicer panel's .ui file against the module code that drives it (read, not imported).

``UADBrain.py`` and the panel package ``UADBrainSlicer`` need Qt and a running Slicer to import, so
they are parsed with ``ast``: every ``.ui.<widget>`` they touch must exist in the .ui file, and every
widget bound to the parameter node (dynamic property ``SlicerParameterName``) must name a parameter
of the ``@parameterNodeWrapper`` class (or, dotted, of a ``@parameterPack`` in it), with a type that
widget can show. Signals connected, properties
set (in the .ui file and in code) and ``slicer.util`` functions called are checked against tables
taken from the Qt, CTK and Slicer headers named beside each entry, since a wrong name only fails
at run time inside desktop Slicer.
"""

import ast
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

MODULE_DIR = Path(__file__).resolve().parent.parent / "UADBrain"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "UADBrain.ui"
MODULE_FILE = MODULE_DIR / "UADBrain.py"
PANEL_DIR = MODULE_DIR / "UADBrainSlicer"
PANEL_FILES = [MODULE_FILE, *sorted(PANEL_DIR.glob("*.py"))]
MRML_LOGIC_DIR = MODULE_DIR / "UADBrainMRML"

# widget class → predicate on the parameter's annotation source, from Slicer's GUI connectors
# (Base/Python/slicer/parameterNodeWrapper/guiConnectors.py: canRepresent of each connector)
WIDGET_ACCEPTS = {
    "qMRMLNodeComboBox": lambda a: "vtkMRML" in a,
    "QCheckBox": lambda a: a == "bool",
    "QDoubleSpinBox": lambda a: a == "float" or a.startswith("Annotated[float"),
    "ctkSliderWidget": lambda a: a.startswith("Annotated[float") and ("WithinRange" in a or "Maximum" in a),
    "QSpinBox": lambda a: a == "int" or a.startswith("Annotated[int"),
    "ctkDirectoryButton": lambda a: a.startswith("pathlib."),
}

# class → (base class, its own signals in PythonQt's normalized form, its own Q_PROPERTYs)
WIDGET_CLASSES = {
    # Qt 5.15 headers (qwidget.h, qabstractbutton.h, ...); Slicer 5.8 is built on Qt 5.15
    "QObject": (None, {"destroyed()", "destroyed(QObject*)", "objectNameChanged(QString)"}, {"objectName"}),
    "QWidget": ("QObject", {"customContextMenuRequested(QPoint)", "windowTitleChanged(QString)"},
                {"enabled", "visible", "toolTip", "statusTip", "whatsThis", "styleSheet", "minimumSize",
                 "maximumSize", "sizePolicy", "geometry", "font", "windowTitle", "layoutDirection"}),
    "QAbstractButton": ("QWidget", {"clicked(bool)", "clicked()", "pressed()", "released()", "toggled(bool)"},
                        {"text", "icon", "iconSize", "checkable", "checked", "autoRepeat", "autoExclusive"}),
    "QPushButton": ("QAbstractButton", set(), {"default", "autoDefault", "flat"}),
    "QCheckBox": ("QAbstractButton", {"stateChanged(int)"}, {"tristate"}),
    "QLabel": ("QWidget", {"linkActivated(QString)", "linkHovered(QString)"},
               {"text", "wordWrap", "alignment", "textFormat", "openExternalLinks", "margin", "indent"}),
    "QComboBox": ("QWidget", {"currentIndexChanged(int)", "currentIndexChanged(QString)", "activated(int)",
                              "activated(QString)", "highlighted(int)", "currentTextChanged(QString)",
                              "editTextChanged(QString)", "textActivated(QString)"},
                  {"currentIndex", "currentText", "editable", "maxVisibleItems", "count"}),
    "QAbstractSpinBox": ("QWidget", {"editingFinished()"}, {"readOnly", "alignment", "keyboardTracking", "specialValueText"}),
    "QDoubleSpinBox": ("QAbstractSpinBox", {"valueChanged(double)", "valueChanged(QString)", "textChanged(QString)"},
                       {"value", "minimum", "maximum", "singleStep", "decimals", "prefix", "suffix"}),
    "QProgressBar": ("QWidget", {"valueChanged(int)"},
                     {"value", "minimum", "maximum", "textVisible", "format", "orientation"}),
    "QAbstractItemView": ("QWidget", {"clicked(QModelIndex)", "doubleClicked(QModelIndex)", "pressed(QModelIndex)",
                                      "activated(QModelIndex)", "entered(QModelIndex)"},
                          {"editTriggers", "selectionMode", "selectionBehavior", "alternatingRowColors"}),
    "QTableView": ("QAbstractItemView", set(), {"showGrid", "sortingEnabled", "wordWrap"}),
    "QListView": ("QAbstractItemView", {"indexesMoved(QModelIndexList)"},  # qlistview.h
                  {"movement", "flow", "isWrapping", "resizeMode", "spacing", "viewMode", "wordWrap"}),
    "QListWidget": ("QListView", {"itemChanged(QListWidgetItem*)", "itemClicked(QListWidgetItem*)",  # qlistwidget.h
                                  "currentRowChanged(int)", "itemSelectionChanged()"},
                    {"count", "currentRow", "sortingEnabled"}),
    "QTimer": ("QObject", {"timeout()"}, {"interval", "singleShot", "active"}),
    # CTK Libs/Widgets/ctkCollapsibleButton.h, ctkSliderWidget.h, ctkDirectoryButton.h
    "ctkCollapsibleButton": ("QAbstractButton", {"contentsCollapsed(bool)"},
                             {"collapsed", "collapsedHeight", "flat", "contentsFrameShape", "contentsFrameShadow",
                              "contentsLineWidth", "contentsMidLineWidth"}),
    "ctkSliderWidget": ("QWidget", {"valueChanged(double)", "valueIsChanging(double)"},
                        {"decimals", "singleStep", "pageStep", "minimum", "maximum", "value", "prefix", "suffix",
                         "tickInterval", "tickPosition", "autoSpinBoxWidth", "spinBoxAlignment", "tracking",
                         "spinBoxVisible", "popupSlider"}),
    "ctkDirectoryButton": ("QWidget", {"directoryChanged(QString)", "directorySelected(QString)"},
                           {"directory", "caption", "acceptMode", "options", "text", "icon"}),
    # Slicer Libs/MRML/Widgets/qMRMLWidget.h, qMRMLNodeComboBox.h, qMRMLTableView.h
    "qMRMLWidget": ("QWidget", {"mrmlSceneChanged(vtkMRMLScene*)"}, set()),
    "qMRMLNodeComboBox": ("QWidget", {"currentNodeChanged(vtkMRMLNode*)", "currentNodeChanged(bool)",
                                      "currentNodeIDChanged(QString)", "nodeActivated(vtkMRMLNode*)",
                                      "nodeAdded(vtkMRMLNode*)", "nodeAddedByUserAction(vtkMRMLNode*)",
                                      "nodeAboutToBeRemoved(vtkMRMLNode*)", "nodeAboutToBeEdited(vtkMRMLNode*)"},
                          {"currentNodeID", "nodeTypes", "showHidden", "showChildNodeTypes", "hideChildNodeTypes",
                           "baseName", "noneEnabled", "addEnabled", "removeEnabled", "editEnabled", "renameEnabled",
                           "interactionNodeSingletonTag", "selectNodeUponCreation", "noneDisplay",
                           "sizeAdjustPolicy"}),
    "qMRMLTableView": ("QTableView", {"mrmlSceneChanged(vtkMRMLScene*)", "selectionChanged()"},
                       {"transposed", "firstRowLocked", "firstColumnLocked"}),
    # Slicer Base/QTGUI/qSlicerApplication.h (slicer.app)
    "qSlicerApplication": ("QObject", {"startupCompleted()", "aboutToQuit()"}, set()),
}

# slicer.util functions this module may call: Slicer 5.8 Base/Python/slicer/util.py
SLICER_UTIL_FUNCTIONS = {
    "loadUI", "childWidgetVariables", "NodeModify", "VTKObservationMixin", "setSliceViewerLayers", "errorDisplay",
    "confirmOkCancelDisplay", "pip_install", "startupEnvironment", "selectModule", "getModuleWidget",
    "getNodesByClass", "arrayFromSegmentBinaryLabelmap", "loadSegmentation",
}

# the colour tables Slicer reads from files (vtkMRMLColorLogic.h, AddDefaultColorNodes table); the
# built-in procedural and table IDs are read from slicer-core's real vtkMRMLColorLogic in the test
SLICER_FILE_COLOR_TABLES = {
    "LightPaleChartColors", "ColdToHotRainbow", "Viridis", "Magma", "DivergingBlueRed", "HotToColdRainbow",
    "DarkBrightChartColors", "MediumChartColors", "Slicer3_2010_Label_Colors", "Slicer3_2010_Brain_Labels",
    "Inferno", "PelvisColor", "SPL-BrainAtlas-ColorFile", "AbdomenColors", "GenericColors", "64Color-Nonsemantic",
    "Plasma", "Cividis", "SPL-BrainAtlas-2009-ColorFile", "SPL-BrainAtlas-2012-ColorFile", "GenericAnatomyColors",
}

# optional engine dependencies that a fresh Slicer does not ship (it has NumPy, SciPy, SimpleITK)
NOT_IN_SLICER = ("torch", "monai", "nibabel", "matplotlib", "tqdm", "nilearn", "sklearn", "pandas")


def class_chain(widget_class: str) -> list[str]:
    assert widget_class in WIDGET_CLASSES, f"no signal/property table for {widget_class} — add it from its header"
    chain = []
    while widget_class:
        chain.append(widget_class)
        widget_class = WIDGET_CLASSES[widget_class][0]
    return chain


def signals_of(widget_class: str) -> set[str]:
    return set().union(*(WIDGET_CLASSES[c][1] for c in class_chain(widget_class)))


def properties_of(widget_class: str) -> set[str]:
    return set().union(*(WIDGET_CLASSES[c][2] for c in class_chain(widget_class)))


@pytest.fixture(scope="module")
def ui_widgets():
    root = ET.parse(UI_FILE).getroot()
    return {widget.get("name"): widget for widget in root.iter("widget")}, root


@pytest.fixture(scope="module")
def module_tree():
    """The module file and every file of the panel package, as one tree."""
    trees = [ast.parse(path.read_text(encoding="utf-8")) for path in PANEL_FILES]
    return ast.Module(body=[statement for tree in trees for statement in tree.body], type_ignores=[])


def _annotations(node: ast.ClassDef) -> dict[str, str]:
    return {statement.target.id: ast.unparse(statement.annotation)
            for statement in node.body if isinstance(statement, ast.AnnAssign)}


def _decorated(tree, decorator_name: str) -> dict[str, ast.ClassDef]:
    return {node.name: node for node in ast.walk(tree) if isinstance(node, ast.ClassDef)
            and any(ast.unparse(decorator) == decorator_name for decorator in node.decorator_list)}


def parameter_annotations(tree) -> dict[str, str]:
    """Parameter name → annotation source; a parameter pack's members as ``pack.member``."""
    wrappers = _decorated(tree, "parameterNodeWrapper")
    assert len(wrappers) == 1, f"expected one @parameterNodeWrapper class, found {sorted(wrappers)}"
    packs = {name: _annotations(node) for name, node in _decorated(tree, "parameterPack").items()}
    parameters = {}
    for name, annotation in _annotations(next(iter(wrappers.values()))).items():
        parameters[name] = annotation
        for member, member_annotation in packs.get(annotation, {}).items():
            parameters[f"{name}.{member}"] = member_annotation
    return parameters


def enum_classes(tree) -> set[str]:
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.ClassDef)
            and any(ast.unparse(base) in ("enum.Enum", "Enum") for base in node.bases)}


def touched_widget_names(tree) -> set[str]:
    """Names X in ``<anything>.ui.X``."""
    return {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Attribute) and node.value.attr == "ui"}


def parameter_bindings(widgets) -> dict[str, tuple[str, str]]:
    """widget name → (widget class, SlicerParameterName)."""
    bound = {}
    for name, widget in widgets.items():
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                assert prop.get("stdset") == "0", f"{name}: SlicerParameterName must be a dynamic property"
                bound[name] = (widget.get("class"), prop.find("string").text)
    return bound


def test_every_widget_the_code_touches_exists(ui_widgets, module_tree):
    widgets, _ = ui_widgets
    touched = touched_widget_names(module_tree)
    assert len(touched) > 15  # the parser found the widget accesses
    missing = sorted(touched - set(widgets))
    assert not missing, f"the panel uses widgets that UADBrain.ui lacks: {missing}"


def test_every_bound_widget_names_a_parameter_of_a_fitting_type(ui_widgets, module_tree):
    widgets, _ = ui_widgets
    parameters = parameter_annotations(module_tree)
    enums = enum_classes(module_tree)
    bindings = parameter_bindings(widgets)
    assert bindings
    for widget_name, (widget_class, parameter) in bindings.items():
        assert parameter in parameters, f"{widget_name} is bound to '{parameter}', which is not a parameter"
        annotation = parameters[parameter]
        if widget_class == "QComboBox":
            fits = annotation in enums or "Choice(" in annotation
        else:
            fits = WIDGET_ACCEPTS[widget_class](annotation)
        assert fits, f"{widget_name} ({widget_class}) cannot show parameter {parameter}: {annotation}"
    assert len(set(parameter for _, parameter in bindings.values())) == len(bindings), "a parameter is bound twice"


def test_contrast_parameters_exist(module_tree):
    parameters = parameter_annotations(module_tree)
    for node in ast.walk(module_tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "CONTRAST_PARAMETERS" for t in node.targets):
            names = [value.value for value in node.value.values]
            assert set(names) <= set(parameters)
            assert set(ast.literal_eval(node.value)) == {"flair", "t1", "t2", "t1c"}
            return
    raise AssertionError("CONTRAST_PARAMETERS not found")


def test_mrml_widgets_receive_the_scene_and_custom_widgets_are_declared(ui_widgets):
    widgets, root = ui_widgets
    receivers = {connection.findtext("receiver") for connection in root.iter("connection")
                 if connection.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"}
    # qMRMLTableView with a scene but no table view node clears itself on every EndBatchProcessEvent
    # (scene load, DICOM import): Slicer Libs/MRML/Widgets/qMRMLTableView.cxx, endProcessing() ->
    # updateWidgetFromViewNode() -> setMRMLTableNode(nullptr). The lesion table needs no scene.
    sceneless = {name for name, widget in widgets.items() if widget.get("class") == "qMRMLTableView"}
    assert not sceneless & receivers, f"these table views would lose their table: {sorted(sceneless & receivers)}"
    mrml_widgets = {name for name, widget in widgets.items() if widget.get("class").startswith("qMRML")
                    and widget.get("class") != "qMRMLWidget"} - sceneless
    assert mrml_widgets <= receivers, f"no scene for {sorted(mrml_widgets - receivers)}"
    declared = {custom.findtext("class") for custom in root.iter("customwidget")}
    used = {widget.get("class") for widget in widgets.values() if not widget.get("class").startswith("Q")}
    assert used <= declared, f"undeclared custom widgets: {sorted(used - declared)}"


def test_resources_the_module_loads_exist(module_tree):
    source = MODULE_FILE.read_text(encoding="utf-8")
    assert 'self.resourcePath("UI/UADBrain.ui")' in source and UI_FILE.is_file()
    assert (MODULE_DIR / "Resources" / "Icons" / "UADBrain.png").is_file()  # module and sample-data icon


def ui_classes(widgets) -> dict[str, str]:
    return {name: widget.get("class") for name, widget in widgets.items()}


def receiver_class(node: ast.expr, classes: dict[str, str], tree) -> str:
    """The Qt class of the object a ``.connect`` call is made on, as far as the code says."""
    source = ast.unparse(node)
    if source.startswith("self.ui."):
        return classes[source.split(".")[2]]
    if source == "slicer.app":
        return "qSlicerApplication"
    for assign in ast.walk(tree):
        if isinstance(assign, ast.Assign) and any(ast.unparse(t) == source for t in assign.targets):
            if ast.unparse(assign.value) == "qt.QTimer()":
                return "QTimer"
    raise AssertionError(f"cannot tell the class of '{source}' — extend receiver_class")


def test_every_connected_signal_exists_on_its_widget_class(ui_widgets, module_tree):
    classes = ui_classes(ui_widgets[0])
    connections = [node for node in ast.walk(module_tree) if isinstance(node, ast.Call)
                   and isinstance(node.func, ast.Attribute) and node.func.attr == "connect"
                   and node.args and isinstance(node.args[0], ast.Constant)]
    assert len(connections) >= 10  # the parser found the connections
    for call in connections:
        widget_class = receiver_class(call.func.value, classes, module_tree)
        signal = call.args[0].value
        assert signal in signals_of(widget_class), (
            f"{ast.unparse(call.func.value)} ({widget_class}) has no signal {signal}; it has "
            f"{sorted(signals_of(widget_class))}")


def test_every_property_the_ui_file_sets_exists(ui_widgets):
    widgets, _ = ui_widgets
    for name, widget in widgets.items():
        for prop in widget.findall("property"):
            if prop.get("stdset") == "0":  # a dynamic property (SlicerParameterName)
                continue
            assert prop.get("name") in properties_of(widget.get("class")), (
                f"{name} ({widget.get('class')}) has no property '{prop.get('name')}'")


def test_every_widget_property_the_code_sets_exists(ui_widgets, module_tree):
    classes = ui_classes(ui_widgets[0])
    assigned = []
    for node in ast.walk(module_tree):
        if isinstance(node, (ast.Assign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                elements = target.elts if isinstance(target, ast.Tuple) else [target]
                assigned += [e for e in elements if isinstance(e, ast.Attribute) and ast.unparse(e).startswith("self.ui.")
                             and ast.unparse(e).count(".") == 3]
    assert len(assigned) > 10
    for target in assigned:
        widget = target.value.attr
        assert target.attr in properties_of(classes[widget]), (
            f"{ast.unparse(target)}: {classes[widget]} has no property '{target.attr}'")


def test_only_slicer_util_functions_that_exist_are_called(module_tree):
    used = {node.attr for node in ast.walk(module_tree) if isinstance(node, ast.Attribute)
            and ast.unparse(node.value) == "slicer.util"}
    used |= {alias.name for node in ast.walk(module_tree) if isinstance(node, ast.ImportFrom)
             and node.module == "slicer.util" for alias in node.names}
    assert used and used <= SLICER_UTIL_FUNCTIONS, f"not checked against Slicer: {sorted(used - SLICER_UTIL_FUNCTIONS)}"


def test_node_unions_include_none(module_tree):
    """Slicer's parameter node wrapper writes None as a node parameter's default; a Union of node
    types without None cannot serialize it and the wrapper fails to construct (Slicer docs,
    parameter_nodes/gui_connection.md: "The None is necessary for the parameter node wrapper
    default node of None to work correctly"; serializers.py UnionSerializer._findBestSerializer)."""
    for name, annotation in parameter_annotations(module_tree).items():
        if annotation.startswith(("Union[", "typing.Union[")) and "vtkMRML" in annotation:
            assert re.search(r"\bNone\b", annotation), f"{name}: {annotation} needs None in the Union"


def test_median_choices_are_the_engines(module_tree):
    from UADBrainLib.inference.postprocessing import MEDIAN_KERNELS

    for node in ast.walk(module_tree):
        if isinstance(node, ast.ClassDef) and node.name == "MedianKernel":
            values = [statement.value.value for statement in node.body if isinstance(statement, ast.Assign)]
            assert tuple(values) == MEDIAN_KERNELS
            return
    raise AssertionError("MedianKernel not found")


def colour_node_literals() -> set[str]:
    literals = set()
    for path in [*PANEL_FILES, *MRML_LOGIC_DIR.glob("*.py")]:
        literals |= {node.value for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
                     if isinstance(node, ast.Constant) and isinstance(node.value, str)
                     and re.match(r"vtkMRML\w*Color\w*Node", node.value)}
    return literals


def test_colour_node_ids_are_ones_slicer_defines():
    slicer = pytest.importorskip("slicer", reason="needs slicer-core for Slicer's colour logic")
    scene = slicer.vtkMRMLScene()
    color_logic = slicer.vtkMRMLColorLogic()
    color_logic.SetMRMLScene(scene)
    color_logic.AddDefaultColorNodes()  # the built-in tables and procedural nodes (no colour files here)
    known = {scene.GetNthNodeByClass(i, "vtkMRMLColorNode").GetID()
             for i in range(scene.GetNumberOfNodesByClass("vtkMRMLColorNode"))}
    known |= {f"vtkMRMLColorTableNodeFile{name}.txt" for name in SLICER_FILE_COLOR_TABLES}
    for literal in colour_node_literals():
        if hasattr(slicer, literal):  # a class name (AddNewNodeByClass, GetNthNodeByClass)
            continue
        assert literal in known, f"'{literal}' is not a colour node ID that Slicer defines"


def test_the_module_loads_without_the_optional_engine_packages(module_tree):
    """Slicer imports UADBrain.py at startup, before anyone could install PyTorch or MONAI."""
    pytest.importorskip("slicer", reason="the module Logic needs slicer-core")
    modules = sorted({node.module for node in module_tree.body if isinstance(node, ast.ImportFrom)
                      and node.module.split(".")[0] in ("UADBrainLib", "UADBrainMRML")})
    assert "UADBrainMRML.logic" in modules
    code = (f"import sys\nfor name in {NOT_IN_SLICER!r}: sys.modules[name] = None\n"
            f"sys.path.insert(0, {str(MODULE_DIR)!r})\n" + "".join(f"import {m}\n" for m in modules))
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]


def test_the_module_file_is_thin():
    """Module, a Widget that embeds the panel, the Logic entry point and the test hook; the panel's
    code lives in the importable package UADBrainSlicer."""
    source = MODULE_FILE.read_text(encoding="utf-8")
    assert len(source.splitlines()) <= 150
    tree = ast.parse(source)
    assert {node.name for node in tree.body if isinstance(node, ast.ClassDef)} == {"UADBrain", "UADBrainWidget"}
    imported = {alias.name for node in tree.body if isinstance(node, ast.ImportFrom) for alias in node.names}
    assert {"UADBrainLogic", "UADBrainTest", "UADBrainPanel"} <= imported
