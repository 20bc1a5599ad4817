"""Device choice on every mix of hardware, and runs that outgrow the GPU's memory.

No GPU is needed: PyTorch's CUDA and MPS back ends are faked where the choice is tested, and the
out-of-memory errors are PyTorch's own error type, raised where a real one would come from.
"""

import warnings
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from phantoms import phantom_brain
from UADBrainLib import device as device_module
from UADBrainLib.cli.main import main
from UADBrainLib.device import DeviceChoice, available_devices, check_device_name, choose_device
from UADBrainLib.errors import DeviceError
from UADBrainLib.inference import pipeline
from UADBrainLib.inference.device_memory import collecting_device_notes
from UADBrainLib.inference.models import load_model
from UADBrainLib.inference.models.diffusion import DEFAULT_SAMPLER, SeededReconstruction
from UADBrainLib.inference.models.networks import predict_volume
from UADBrainLib.inference.options import DetectOptions
from UADBrainLib.bundle import find_bundle

HARDWARE = {  # what PyTorch reports: (usable CUDA GPUs, CUDA problem), (MPS usable, MPS problem)
    "none": ((0, None), (False, None)),
    "one CUDA GPU": ((1, None), (False, None)),
    "two CUDA GPUs": ((2, None), (False, None)),
    "Apple silicon": ((0, None), (True, None)),
    "CUDA driver too old": ((0, "the CUDA build of PyTorch found no usable GPU: driver too old"), (False, None)),
    "MPS that cannot start": ((0, None), (False, "the Apple-silicon GPU (MPS) could not start: boom")),
}
EXPECTED = {  # request → device chosen, or the refusal's words
    "none": {"auto": "cpu", "cpu": "cpu", "cuda": "no CUDA GPU", "cuda:1": "no CUDA GPU", "mps": "no Apple-silicon"},
    "one CUDA GPU": {"auto": "cuda", "cpu": "cpu", "cuda": "cuda", "cuda:1": "sees 1 CUDA GPU", "mps": "no Apple"},
    "two CUDA GPUs": {"auto": "cuda", "cpu": "cpu", "cuda": "cuda", "cuda:1": "cuda:1", "mps": "no Apple-silicon"},
    "Apple silicon": {"auto": "mps", "cpu": "cpu", "cuda": "no CUDA GPU", "cuda:1": "no CUDA GPU", "mps": "mps"},
    "CUDA driver too old": {"auto": "cpu", "cpu": "cpu", "cuda": "driver too old", "cuda:1": "driver too old",
                            "mps": "no Apple-silicon"},
    "MPS that cannot start": {"auto": "cpu", "cpu": "cpu", "cuda": "no CUDA GPU", "cuda:1": "no CUDA GPU",
                              "mps": "could not start"},
}


@pytest.fixture
def hardware(monkeypatch):
    def use(name):
        cuda, mps = HARDWARE[name]
        monkeypatch.setattr(device_module, "cuda_status", lambda probe=True: cuda)
        monkeypatch.setattr(device_module, "mps_status", lambda probe=True: mps)
    return use


@pytest.mark.parametrize("machine", list(HARDWARE))
def test_device_choice_on_every_mix_of_hardware(hardware, machine):
    hardware(machine)
    for request, expected in EXPECTED[machine].items():
        if expected in ("cpu", "cuda", "cuda:1", "mps"):
            choice = choose_device(request)
            assert choice.device == expected, (machine, request)
            # auto says why it left a GPU that is there unused, and how to mend PyTorch
            broken_gpu = machine in ("CUDA driver too old", "MPS that cannot start")
            assert (choice.note is not None) == (request == "auto" and broken_gpu), (machine, request)
            if choice.note:
                assert "reinstall PyTorch" in choice.note and "\n" not in choice.note
        else:
            with pytest.raises(DeviceError, match=expected):
                choose_device(request)
    listed = available_devices()
    assert listed[-1] == "cpu" and listed == sorted(listed, key=lambda d: d == "cpu")  # GPUs first
    assert ("mps" in listed) == (machine == "Apple silicon")
    assert sum(d.startswith("cuda") for d in listed) == HARDWARE[machine][0][0]


def _fake_torch(cuda_built=True, available=True, warning=None, probe_error=None, mps=False):
    def is_available():
        if warning:
            warnings.warn(warning)
        return available

    def ones(count, device):
        if probe_error and device != "cpu":
            raise RuntimeError(probe_error)
        return torch.ones(count)

    return SimpleNamespace(
        __version__="9.9.9+cu999", ones=ones,
        backends=SimpleNamespace(cuda=SimpleNamespace(is_built=lambda: cuda_built),
                                 mps=SimpleNamespace(is_built=lambda: mps, is_available=lambda: mps)),
        cuda=SimpleNamespace(is_available=is_available, device_count=lambda: 1))


@pytest.mark.parametrize("fake, gpus, problem", [
    (dict(cuda_built=False), 0, None),  # a CPU build: the CPU, nothing to mend
    (dict(available=False), 0, None),  # a CUDA build on a machine without a GPU: the same
    (dict(available=False, warning="CUDA initialization: The NVIDIA driver on your system is too old "
                                   "(found version 10020).\nPlease update your GPU driver"), 0, "driver on your system"),
    (dict(probe_error="CUDA error: no kernel image is available for execution on the device\nmore"), 0,
     "no kernel image"),
    (dict(), 1, None),
])
def test_a_cuda_build_that_cannot_start_is_probed(monkeypatch, fake, gpus, problem):
    monkeypatch.setattr(device_module, "_torch", lambda: _fake_torch(**fake))
    device_module.cuda_status.cache_clear()
    try:
        found, reason = device_module.cuda_status()
        assert found == gpus
        assert (reason is None) == (problem is None) and (problem is None or problem in reason), reason
        assert reason is None or "\n" not in reason
    finally:
        device_module.cuda_status.cache_clear()


def test_device_names_and_the_cli_refusal(capsys):
    assert check_device_name("CUDA:1") == "cuda:1" and check_device_name(None) == "auto"
    for bad in ("tpu", "cuda:x", "gpu"):
        with pytest.raises(DeviceError, match="use auto"):
            check_device_name(bad)
        with pytest.raises(DeviceError):
            DetectOptions(device=bad)
    with pytest.raises(SystemExit):
        main(["detect", "--example", "--device", "tpu"])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "unknown device 'tpu'" in error and "mps" in error


# --------------------------------------------------------------------------- out of memory

class RunsOutOfMemory:
    """A slice forward whose first ``failures`` calls with more than ``fits`` slices raise
    PyTorch's out-of-memory error, as a GPU would."""

    def __init__(self, forward, failures=1, fits=1):
        self.forward, self.failures, self.fits, self.sizes = forward, failures, fits, []
        for protocol in ("start_volume", "checkpoint", "restore"):  # a stochastic forward's (diffusion.py)
            if hasattr(forward, protocol):
                setattr(self, protocol, getattr(forward, protocol))

    def __call__(self, inputs):
        self.sizes.append(inputs.shape[0])
        if self.failures and inputs.shape[0] > self.fits:
            self.failures -= 1
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 4.00 GiB total)")
        return self.forward(inputs)


def _slice_volume():
    rng = np.random.default_rng(0)
    image = rng.normal(size=(40, 32, 32)).astype(np.float32)
    mask = np.zeros(image.shape, bool)
    mask[4:36, 6:26, 6:26] = True
    return image, mask


def test_batches_that_run_out_of_memory_are_halved_with_the_same_result():
    torch.manual_seed(0)
    network = torch.nn.Conv2d(4, 1, 3, padding=1).eval()
    image, mask = _slice_volume()
    clean = predict_volume(network, image, mask, context=1, device="cpu", batch_size=16)
    failing = RunsOutOfMemory(network, failures=2, fits=4)
    with collecting_device_notes() as notes:
        retried = predict_volume(failing, image, mask, context=1, device="cpu", batch_size=16)
    assert failing.sizes[:3] == [16, 8, 4]  # halved until it fits, then on at that size
    np.testing.assert_allclose(retried, clean, atol=1e-6)
    assert notes == ["cpu ran out of memory with 16 slices per batch; went on with 8 (same result, slower).",
                     "cpu ran out of memory with 8 slices per batch; went on with 4 (same result, slower)."]
    never_fits = RunsOutOfMemory(network, failures=100, fits=0)
    with pytest.raises(torch.OutOfMemoryError):  # not even one slice: the pipeline moves the scan to the CPU
        predict_volume(never_fits, image, mask, context=1, device="cpu", batch_size=16)
    assert never_fits.sizes[-1] == 1


def test_a_diffusion_batch_run_again_draws_the_same_noise():
    torch.manual_seed(0)
    network = torch.nn.Conv2d(3, 1, 3, padding=1).eval()
    sampler = {**DEFAULT_SAMPLER, "steps": 2}
    image, mask = _slice_volume()
    whole = predict_volume(SeededReconstruction(network, sampler), image, mask, context=0, device="cpu",
                           batch_size=16)
    small = predict_volume(SeededReconstruction(network, sampler), image, mask, context=0, device="cpu",
                           batch_size=3)
    failing = RunsOutOfMemory(SeededReconstruction(network, sampler), fits=8)
    retried = predict_volume(failing, image, mask, context=0, device="cpu", batch_size=16)
    np.testing.assert_allclose(small, whole, atol=1e-5)
    np.testing.assert_allclose(retried, whole, atol=1e-5)


class FakeGpuMemory:
    """PyTorch's CUDA memory counters over a GPU of ``capacity`` bytes holding ``weights``; a batch
    of n slices needs n · ``per_slice`` while it runs (``grow``: more per slice in larger batches,
    as fragmentation does), else raises PyTorch's out-of-memory error."""

    def __init__(self, capacity, weights, per_slice, grow=0.0):
        self.capacity, self.allocated, self.per_slice, self.grow = capacity, weights, per_slice, grow
        self.peak, self.sizes = weights, []

    def install(self, monkeypatch):
        for name, function in {"synchronize": lambda device=None: None, "empty_cache": lambda: None,
                               "memory_allocated": lambda device=None: self.allocated,
                               "memory_reserved": lambda device=None: self.allocated,
                               "max_memory_allocated": lambda device=None: self.peak,
                               "reset_peak_memory_stats": lambda device=None: setattr(self, "peak", self.allocated),
                               "mem_get_info": lambda device=None: (self.capacity - self.allocated, self.capacity)
                               }.items():
            monkeypatch.setattr(torch.cuda, name, function)

    def run_batch(self, start, stop):
        count = stop - start
        self.sizes.append(count)
        need = int(count * self.per_slice * (1 + self.grow * (count - 1)))
        if self.allocated + need > self.capacity:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {need} bytes")
        self.peak = max(self.peak, self.allocated + need)


def test_cuda_batches_follow_the_free_gpu_memory(monkeypatch):
    from UADBrainLib.inference.device_memory import run_in_batches

    MB = 2 ** 20
    small_gpu = FakeGpuMemory(capacity=4096 * MB, weights=400 * MB, per_slice=300 * MB)  # a 4 GB laptop GPU
    small_gpu.install(monkeypatch)
    run_in_batches(40, small_gpu.run_batch, "cuda", largest=16)
    assert small_gpu.sizes[:3] == [1, 8, 8]  # one slice measured; 0.7 · 3696 MB free / 300 MB a slice
    assert sum(small_gpu.sizes) == 40
    large_gpu = FakeGpuMemory(capacity=80 * 1024 * MB, weights=400 * MB, per_slice=300 * MB)
    large_gpu.install(monkeypatch)
    run_in_batches(40, large_gpu.run_batch, "cuda", largest=16)
    assert large_gpu.sizes[:3] == [1, 16, 16]  # never more than the model's own batch
    fragmented = FakeGpuMemory(capacity=4096 * MB, weights=400 * MB, per_slice=300 * MB, grow=0.1)
    fragmented.install(monkeypatch)
    with collecting_device_notes() as notes:
        run_in_batches(40, fragmented.run_batch, "cuda", largest=16)
    assert fragmented.sizes[:4] == [1, 8, 4, 4] and sum(fragmented.sizes) - 8 == 40  # the failed 8 ran again as 4s
    assert notes == ["cuda ran out of memory with 8 slices per batch; went on with 4 (same result, slower)."]


def test_the_peak_gpu_memory_bench_reports_spans_the_batch_sizing(monkeypatch):
    from UADBrainLib.inference.device_memory import peak_memory_bytes, reset_peak_memory, run_in_batches

    MB = 2 ** 20
    gpu = FakeGpuMemory(capacity=8192 * MB, weights=400 * MB, per_slice=100 * MB)
    gpu.install(monkeypatch)
    reset_peak_memory("cuda")
    gpu.peak = 3000 * MB  # a brain extractor's whole-head pass, before the model's slices
    run_in_batches(40, gpu.run_batch, "cuda", largest=16)  # which resets CUDA's counter to size its batches
    assert peak_memory_bytes("cuda") == 3000 * MB
    assert gpu.peak < 3000 * MB  # what CUDA's own counter alone would have reported


def test_which_failures_move_a_scan_to_the_cpu():
    from UADBrainLib.inference.device_memory import cpu_fallback_note

    out_of_memory = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    mps_out_of_memory = RuntimeError("MPS backend out of memory (MPS allocated: 8.00 GB, other allocations: 1 GB)")
    missing = NotImplementedError("The operator 'aten::grid_sampler_3d' is not currently implemented for the MPS device")
    no_kernel = RuntimeError("CUDA error: no kernel image is available for execution on the device")
    host_out_of_memory = RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 GB")
    bug = ValueError("a bug of ours")
    assert "close other programs that use the GPU" in cpu_fallback_note(out_of_memory, "cuda")
    assert "ran out of memory" in cpu_fallback_note(mps_out_of_memory, "mps")
    assert "lacks an operator" in cpu_fallback_note(missing, "mps") and not cpu_fallback_note(missing, "cuda")
    assert "reinstall PyTorch" in cpu_fallback_note(no_kernel, "cuda", chosen_by_auto=True)
    assert not cpu_fallback_note(no_kernel, "cuda")  # asked for CUDA by name: the error stands
    assert not cpu_fallback_note(bug, "cuda", chosen_by_auto=True)
    assert not cpu_fallback_note(host_out_of_memory, "cuda")  # the CPU run would need more of the host's memory
    assert not cpu_fallback_note(out_of_memory, "cpu")  # nowhere else to go: the error stands
    for error in (out_of_memory, mps_out_of_memory, missing, no_kernel):
        note = cpu_fallback_note(error, "mps" if error is not no_kernel else "cuda", chosen_by_auto=True)
        assert note and "\n" not in note and "the scan ran on the CPU instead" in note


@pytest.fixture(scope="module")
def phantom():
    image, mask, _ = phantom_brain()
    return image, mask


def test_detect_retries_a_model_call_that_runs_out_of_memory(phantom):
    """The first network call fails with PyTorch's out-of-memory error: the retry, its warning, the same map."""
    image, mask = phantom
    options = DetectOptions(check_contrast=False, device="cpu")
    clean = pipeline.detect({"flair": image}, model="dae", options=options, mask=mask)
    model = load_model(find_bundle("dae"), "cpu")
    head = next(iter(model.networks))
    model.networks = {**model.networks, head: RunsOutOfMemory(model.networks[head])}
    retried = pipeline.detect({"flair": image}, model=model, options=options, mask=mask)
    assert model.networks[head].sizes[:2] == [16, 8]
    assert any("ran out of memory with 16 slices per batch" in w for w in retried.report["warnings"])
    assert not clean.report["warnings"]
    np.testing.assert_allclose(sitk.GetArrayFromImage(retried.anomaly_map), sitk.GetArrayFromImage(clean.anomaly_map),
                               atol=1e-5)
    assert np.array_equal(retried.labels_array, clean.labels_array)


def test_a_scan_that_does_not_fit_the_gpu_runs_on_the_cpu(phantom, monkeypatch):
    image, mask = phantom
    clean = pipeline.detect({"flair": image}, model="dae", options=DetectOptions(check_contrast=False, device="cpu"),
                            mask=mask)
    monkeypatch.setattr(pipeline, "choose_device", lambda requested: DeviceChoice("cuda"))
    on_gpu = load_model(find_bundle("dae"), "cpu")
    on_gpu.device, calls = "cuda", []  # as if loaded on a GPU whose every call runs out of memory

    def out_of_memory(*args, **kwargs):
        calls.append(1)
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.50 GiB (GPU 0; 3.81 GiB total)")

    on_gpu.predict = out_of_memory
    result = pipeline.detect({"flair": image}, model=on_gpu, options=DetectOptions(check_contrast=False, device="cuda"),
                             mask=mask)
    assert calls == [1] and result.report["device"] == "cpu" and result.report["device_requested"] == "cuda"
    assert result.report["warnings"][0].startswith("cuda ran out of memory (CUDA out of memory. Tried to "
                                                   "allocate 1.50 GiB")
    assert "ran on the CPU instead" in result.report["warnings"][0]
    assert "cuda attempt" in result.report["timings_s"]  # the failed try's time is not hidden
    np.testing.assert_allclose(sitk.GetArrayFromImage(result.anomaly_map), sitk.GetArrayFromImage(clean.anomaly_map),
                               atol=1e-5)


def test_an_operator_mps_lacks_moves_the_scan_to_the_cpu(phantom, monkeypatch):
    image, mask = phantom
    options = DetectOptions(check_contrast=False, device="cpu")
    clean = pipeline.detect({"flair": image}, model="dae", options=options, mask=mask)
    on_mps = load_model(find_bundle("dae"), "cpu")
    on_mps.device = "mps"

    def missing_operator(*args, **kwargs):
        raise NotImplementedError("The operator 'aten::upsample_bicubic2d.out' is not currently implemented for the "
                                  "MPS device. If you want this op to be considered...\nmore lines")

    on_mps.predict = missing_operator
    monkeypatch.setattr(pipeline, "choose_device", lambda requested: DeviceChoice("mps"))
    result = pipeline.detect({"flair": image}, model=on_mps, options=replace(options, device="mps"), mask=mask)
    assert result.report["device"] == "cpu"
    assert result.report["warnings"][0].startswith("mps lacks an operator this model needs (The operator "
                                                   "'aten::upsample_bicubic2d.out'")
    np.testing.assert_allclose(sitk.GetArrayFromImage(result.anomaly_map), sitk.GetArrayFromImage(clean.anomaly_map),
                               atol=1e-5)


def test_a_loaded_model_runs_where_the_caller_loaded_it_under_auto(phantom, monkeypatch):
    image, mask = phantom
    monkeypatch.setattr(pipeline, "choose_device", lambda requested: DeviceChoice("cuda"))  # a GPU machine
    loaded = load_model(find_bundle("dae"), "cpu")
    result = pipeline.detect({"flair": image}, model=loaded, options=DetectOptions(check_contrast=False), mask=mask)
    assert result.report["device"] == "cpu"  # not reloaded onto the GPU behind the caller's back


def test_auto_says_why_it_left_a_gpu_unused(phantom, monkeypatch):
    image, mask = phantom
    note = "the CUDA GPU could not start with PyTorch 9: no kernel image — reinstall PyTorch."
    monkeypatch.setattr(pipeline, "choose_device", lambda requested: DeviceChoice("cpu", note))
    result = pipeline.detect({"flair": image}, model="dae", options=DetectOptions(check_contrast=False), mask=mask)
    assert result.report["warnings"][0] == f"ran on the CPU: {note}" and result.report["device"] == "cpu"
