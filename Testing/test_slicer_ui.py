"""The Slicer panel's .ui file against the module code that drives it (read, not imported).

``UADBrain.py`` needs Qt and a running Slicer to import, so it is parsed with ``ast``: every
``.ui.<widget>`` it touches must exist in the .ui file, and every widget bound to the parameter
node (dynamic property ``SlicerParameterName``) must name a parameter of the
``@parameterNodeWrapper`` class, with a type that widget can show.
"""

import ast
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

MODULE_DIR = Path(__file__).resolve().parent.parent / "UADBrain"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "UADBrain.ui"
MODULE_FILE = MODULE_DIR / "UADBrain.py"

# widget class → predicate on the parameter's annotation source, from Slicer's GUI connectors
WIDGET_ACCEPTS = {
    "qMRMLNodeComboBox": lambda a: "vtkMRML" in a,
    "QCheckBox": lambda a: a == "bool",
    "QDoubleSpinBox": lambda a: a == "float" or a.startswith("Annotated[float"),
    "ctkSliderWidget": lambda a: a.startswith("Annotated[float") and ("WithinRange" in a or "Maximum" in a),
    "QSpinBox": lambda a: a == "int" or a.startswith("Annotated[int"),
    "ctkDirectoryButton": lambda a: a.startswith("pathlib."),
}


@pytest.fixture(scope="module")
def ui_widgets():
    root = ET.parse(UI_FILE).getroot()
    return {widget.get("name"): widget for widget in root.iter("widget")}, root


@pytest.fixture(scope="module")
def module_tree():
    return ast.parse(MODULE_FILE.read_text())


def parameter_annotations(tree) -> dict[str, str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and any(
                ast.unparse(decorator) == "parameterNodeWrapper" for decorator in node.decorator_list):
            return {statement.target.id: ast.unparse(statement.annotation)
                    for statement in node.body if isinstance(statement, ast.AnnAssign)}
    raise AssertionError("no @parameterNodeWrapper class in UADBrain.py")


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
    assert not missing, f"UADBrain.py uses widgets that UADBrain.ui lacks: {missing}"


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
    mrml_widgets = {name for name, widget in widgets.items() if widget.get("class").startswith("qMRML")
                    and widget.get("class") != "qMRMLWidget"}
    assert mrml_widgets <= receivers, f"no scene for {sorted(mrml_widgets - receivers)}"
    declared = {custom.findtext("class") for custom in root.iter("customwidget")}
    used = {widget.get("class") for widget in widgets.values() if not widget.get("class").startswith("Q")}
    assert used <= declared, f"undeclared custom widgets: {sorted(used - declared)}"


def test_resources_the_module_loads_exist(module_tree):
    source = MODULE_FILE.read_text()
    assert 'self.resourcePath("UI/UADBrain.ui")' in source and UI_FILE.is_file()
    assert (MODULE_DIR / "Resources" / "Icons" / "UADBrain.png").is_file()  # module and sample-data icon
