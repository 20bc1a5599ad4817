"""The UADBrain Slicer panel, importable (``UADBrain.py`` is the thin module file that embeds it).

One class per file, in the manner of SlicerNNUnet: ``parameters`` (the parameter node and its
``RunOptions`` pack), ``panel`` (the widget), ``logic`` (the module Logic on Slicer's scene),
``packages`` (installing PyTorch and other packages into Slicer's Python), ``startup`` (sample data,
terminology, the example), ``texts`` (help and acknowledgement) and ``selftest`` (the in-Slicer test).
These need Qt and a running Slicer; the Qt-free Logic they use is in ``UADBrainMRML``.
"""
