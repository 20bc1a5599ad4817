"""Model bundles: a folder with ``metadata.json``, optional weights and a model card (``README.md``).

Modelled on MONAI's bundle format, reduced to what the pipeline needs. ``metadata.json`` keys:

* ``name``, ``version``, ``title`` (one line), ``description``, ``family`` (the model class, see
  ``models.FAMILIES``), ``contrasts`` (the ones it can use), ``required_contrasts``
* ``preprocessing``: ``spacing_mm`` (null = native), ``bias_correction`` (bool),
  ``normalisation`` (see ``preprocessing.normalise``)
* ``scoring``: family-specific settings (e.g. the lesion direction per contrast), and for every
  family ``contrast_fusion`` (how several contrasts' calibrated maps become one: ``"max"``, the
  default, ``"min"`` or ``"mean"``) and ``lead_contrasts`` (when one of them is given, it is scored alone)
* ``postprocessing``: defaults for ``median``, ``min_size_mm3``, ``erosion_mm`` and ``fpr`` (the
  healthy false-positive rate of the calibrated threshold: the model's operating point, chosen on
  the synthetic validation set)
* ``calibration``: healthy voxel-score quantiles per median kernel and volume-level scores
  (see ``calibration.py``)
* ``weights``: ``{"file": ..., "sha256": ...}`` or null (with ``"bundle": NAME``, the file of the
  bundled model NAME: a model rescored with another score shares its source's weights);
  ``network``: architecture and arguments
* ``expected_runtime_s``, ``training``, ``license``, ``references``
* ``task``: ``anomaly`` (the default); bundles of other tasks (``brain_extraction``,
  ``input_check``) live beside the models but are not listed as anomaly models
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ModelError
from .resources import MODELS_DIR as BUNDLED_MODELS_DIR
from .schema import schema_errors

METADATA_FILE = "metadata.json"
DEFAULT_MODEL_ORDER_FILE = "default.txt"  # names the default model(s), one per line, best first
CONTRASTS = ("flair", "t1", "t2", "t1c")
ANOMALY_TASK = "anomaly"  # metadata "task" of anomaly models (the default when absent)


@dataclass
class Bundle:
    path: Path
    metadata: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.metadata["name"]

    @property
    def family(self) -> str:
        return self.metadata["family"]

    @property
    def contrasts(self) -> list[str]:
        return list(self.metadata["contrasts"])

    @property
    def required_contrasts(self) -> list[str]:
        return list(self.metadata.get("required_contrasts", []))

    @property
    def contrast_fusion(self) -> str:
        return self.metadata.get("scoring", {}).get("contrast_fusion", "max")

    @property
    def lead_contrasts(self) -> list[str]:
        return list(self.metadata.get("scoring", {}).get("lead_contrasts", []))

    @property
    def preprocessing(self) -> dict:
        return dict(self.metadata.get("preprocessing", {}))

    @property
    def spacing_mm(self) -> list[float] | None:
        """The model grid's spacing per axis (the metadata may give one number for all three)."""
        spacing = self.preprocessing.get("spacing_mm")
        return [float(spacing)] * 3 if isinstance(spacing, (int, float)) else spacing

    @property
    def postprocessing(self) -> dict:
        return dict(self.metadata.get("postprocessing", {}))

    @property
    def calibration(self) -> dict | None:
        return self.metadata.get("calibration")

    @property
    def weights_path(self) -> Path | None:
        weights = self.metadata.get("weights")
        if not weights:
            return None
        owner = weights.get("bundle")
        return (BUNDLED_MODELS_DIR / owner if owner else self.path) / weights["file"]

    def verified_weights_path(self) -> Path:
        """The weights file, after checking it exists and matches the SHA-256 in the metadata."""
        path = self.weights_path
        if path is None:
            raise ModelError(f"model '{self.name}' has no weights entry in its metadata — the "
                             "bundle is incomplete; reinstall or retrain it.")
        weights = self.metadata["weights"]
        if not path.is_file():
            raise ModelError(f"model '{self.name}': weights file '{path}' is missing — reinstall "
                             "or retrain the model.")
        actual = sha256_of(path)
        if actual != weights.get("sha256"):
            shared = f" (shared with the bundled model '{weights['bundle']}', since changed: rescore it)" \
                if weights.get("bundle") else ""
            raise ModelError(f"model '{self.name}': weights checksum mismatch (file is corrupt or "
                             f"was changed{shared}) — reinstall or retrain the model.")
        return path

    def load_weights_into(self, network, device: str = "cpu"):
        """``network`` (a torch module) with this bundle's verified weights, loaded without
        unpickling code, on ``device`` in eval mode."""
        import torch

        try:
            state = torch.load(self.verified_weights_path(), map_location="cpu", weights_only=True)
        except ModelError:
            raise
        except Exception as error:  # noqa: BLE001 - torch raises many kinds for a damaged file
            raise ModelError(f"model '{self.name}': the weights file cannot be loaded ({type(error).__name__}: "
                             f"{str(error).splitlines()[0][:80] if str(error) else 'damaged'}) — reinstall or "
                             "retrain the model.") from None
        try:
            # weights may be stored in half precision to keep bundles small
            network.load_state_dict({key: value.float() if value.is_floating_point() else value
                                     for key, value in state.items()})
        except RuntimeError:
            raise ModelError(f"model '{self.name}': the weights do not fit the network in its "
                             "metadata — reinstall or retrain the model.") from None
        return network.to(device).eval()

    def require_task(self, task: str, description: str, default_name: str) -> None:
        """Refuse a bundle of another task (``description``: "a brain-extraction model")."""
        if self.metadata.get("task") != task:
            raise ModelError(f"model '{self.name}' is not {description} — give the '{default_name}' "
                             f"bundle or another with \"task\": \"{task}\".")

    def summary(self) -> str:
        meta = self.metadata
        runtime = meta.get("expected_runtime_s", {}).get("cpu")
        runtime_text = f", ~{runtime:g} s per scan on CPU" if runtime else ""
        return (f"{meta.get('title', self.name)} [{', '.join(self.contrasts)}]{runtime_text}")


def sha256_of(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_bundle(path) -> Bundle:
    path = Path(path)
    metadata_path = path / METADATA_FILE
    if not metadata_path.is_file():
        raise ModelError(f"'{path}' is not a model bundle (no {METADATA_FILE}) — give a bundled "
                         f"model name ({', '.join(list_bundled()) or 'none installed'}) or a bundle folder.")
    try:
        metadata = json.loads(metadata_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ModelError(f"model bundle '{path}': {METADATA_FILE} is unreadable ({error}) — "
                         "reinstall or retrain the model.") from None
    problems = schema_errors(metadata)
    if problems:
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise ModelError(f"model bundle '{path}': {METADATA_FILE} is not valid: {problems[0]}{more} — "
                         "reinstall or retrain the model, or fix the file.")
    return Bundle(path=path, metadata=metadata)


def write_metadata(path, metadata: dict) -> None:
    Path(path, METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")


def list_bundled(models_dir: Path = BUNDLED_MODELS_DIR) -> list[str]:
    """Names of the bundled models, the default first."""
    if not models_dir.is_dir():
        return []
    names = sorted(p.name for p in models_dir.iterdir() if is_anomaly_bundle(p))
    preferred = default_model_names(models_dir)
    return [n for n in preferred if n in names] + [n for n in names if n not in preferred]


def is_anomaly_bundle(path: Path) -> bool:
    """A bundle folder holding an anomaly model; bundles of other tasks (``"task"`` in their
    metadata: brain extraction, input check) sit beside them but are not listed as models."""
    metadata_path = path / METADATA_FILE
    if not metadata_path.is_file():
        return False
    try:
        return json.loads(metadata_path.read_text(encoding="utf-8")).get("task", ANOMALY_TASK) == ANOMALY_TASK
    except (OSError, ValueError):
        return True  # listed, so that loading it reports the problem


def default_model_names(models_dir: Path = BUNDLED_MODELS_DIR) -> list[str]:
    order_file = models_dir / DEFAULT_MODEL_ORDER_FILE
    if not order_file.is_file():
        return []
    return [line.strip() for line in order_file.read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.startswith("#")]


_LOADED_TASK_MODELS: dict[tuple, object] = {}


def load_task_model(factory, bundle: Bundle | str | None, default_name: str, device: str = "cpu"):
    """``factory(bundle, device)`` for ``bundle`` (a bundle, a name or folder; None: the bundled
    ``default_name``), made once per process for each bundle, weights and device."""
    bundle = bundle if isinstance(bundle, Bundle) else find_bundle(bundle or default_name)
    key = (factory, str(bundle.path.resolve()), (bundle.metadata.get("weights") or {}).get("sha256", ""), device)
    if key not in _LOADED_TASK_MODELS:
        _LOADED_TASK_MODELS[key] = factory(bundle, device)
    return _LOADED_TASK_MODELS[key]


def find_bundle(name_or_path=None, contrasts=None, models_dir: Path = BUNDLED_MODELS_DIR) -> Bundle:
    """Resolve a model name (bundled) or a bundle folder path.

    With no name, the first bundled model in the default order that can use all given contrasts.
    """
    if name_or_path is None:
        for name in list_bundled(models_dir):
            bundle = read_bundle(models_dir / name)
            if contrasts is None or (set(contrasts) <= set(bundle.contrasts)
                                     and set(bundle.required_contrasts) <= set(contrasts)):
                return bundle
        raise ModelError(f"no bundled model handles the contrasts {sorted(contrasts or [])} — "
                         f"available: {', '.join(list_bundled(models_dir)) or 'none'}.")
    candidate = Path(name_or_path)
    if candidate.is_dir():  # a folder is meant as a bundle: say what is wrong with it
        return read_bundle(candidate)
    if (models_dir / str(name_or_path) / METADATA_FILE).is_file():
        return read_bundle(models_dir / str(name_or_path))
    raise ModelError(f"unknown model '{name_or_path}' — choose one of: "
                     f"{', '.join(list_bundled(models_dir)) or 'none installed'}, or give a bundle folder.")
