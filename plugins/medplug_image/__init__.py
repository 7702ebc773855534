"""medplug image plugin: a MONAI CNN classifier for 2D and 3D scans.

Modules, one job each: ``config`` (what a model is), ``networks`` (build any
``monai.networks.nets`` class), ``preprocessing`` (the MONAI transform chain
stored with the model), ``datasets`` (MedMNIST .npz and manifest CSVs),
``training``, ``calibrate``, ``gradcam`` and ``plugin``.
"""

from medplug import lean_imports

lean_imports.install()  # MONAI without transformers/matplotlib, even if imported directly

PLUGIN_NAME = "image-classifier"
PLUGIN_VERSION = "0.1.0"
