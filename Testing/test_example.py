import numpy as np
import SimpleITK as sitk

from UADBrainLib.inference.bundled_example import EXAMPLE_VOLUMES, load_example
from UADBrainLib.synthesis.example import make_example


def test_stored_example_is_the_generators_default_draw():
    stored, generated = load_example(), make_example()
    assert set(stored) == set(EXAMPLE_VOLUMES)
    for name in EXAMPLE_VOLUMES:
        a, b = stored[name], generated[name]
        assert (a.GetSize(), a.GetSpacing(), a.GetOrigin(), a.GetDirection()) == \
               (b.GetSize(), b.GetSpacing(), b.GetOrigin(), b.GetDirection())
        # images are stored in thousandths of the normalised intensity; the generator's float32
        # arithmetic differs by ~1e-5 between CPUs (seen: 5.09e-4 on one CI machine)
        assert np.abs(sitk.GetArrayFromImage(a).astype(float) - sitk.GetArrayFromImage(b)).max() <= 5e-4 + 5e-5


def test_loading_the_example_needs_no_pytorch():
    import subprocess
    import sys

    code = ("import sys; sys.modules['torch'] = None; sys.path.insert(0, 'UADBrain');"
            "from UADBrainLib.inference.bundled_example import load_example; print(sorted(load_example()))")
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "flair" in completed.stdout
