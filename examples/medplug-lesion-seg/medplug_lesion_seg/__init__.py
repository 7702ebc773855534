"""medplug-lesion-seg: an example third-party medplug plugin that returns a mask.

A small MONAI 3D UNet segments the lung lesion of the sample cohort's CT
phantoms. Modules, one job each: ``config`` (what a model is), ``network``
(the UNet), ``transforms`` (the stored MONAI chain and its inverse),
``cohort`` (image and mask pairs from a cohort manifest), ``loop`` (the epoch
loop), ``fit`` (cohort to model folder), ``plugin`` (the predict contract),
``evaluate`` (Dice and detection figures) and ``train`` (the CLI command).
"""

from medplug import lean_imports

lean_imports.install()  # MONAI without transformers/matplotlib, even if imported directly

PLUGIN_NAME = "lesion-seg"
PLUGIN_VERSION = "0.1.0"
LABELS = ["no_lesion", "lesion"]
