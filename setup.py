"""The package list, found rather than listed, so a new subpackage can never drop out of the wheel.

Everything else is in pyproject.toml. ``UADBrain/Resources`` (bundled models, example, atlas) sits
beside the engine in a source checkout and in Slicer; in a wheel it becomes ``UADBrainLib.Resources``
(``UADBrainLib.resources`` finds it in either place).
"""

from setuptools import find_packages, setup

setup(packages=[*find_packages("UADBrain", include=["UADBrainLib*", "UADBrainMRML*", "UADBrainWeb*"]),
                "UADBrainLib.Resources"])
