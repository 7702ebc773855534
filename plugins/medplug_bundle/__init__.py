"""medplug's no-code routes: models people already have, run as plugins without writing one.

Three plugins, one sub-package each (each with its own ``medplug-plugin.json``):

- ``monai_bundle`` (``monai-bundle``): a MONAI Bundle folder as it is, its own
  ``configs/inference.json`` transforms parsed by ``monai.bundle.ConfigParser``;
- ``hf_image`` (``hf-image``): a local Hugging Face ``AutoModelForImageClassification``
  folder with its image processor;
- ``torchscript`` (``torchscript``): a TorchScript file plus a small JSON.

Shared modules: ``identity`` (what a folder is, by the hashes of its files),
``volume_reader`` (medplug's ingested volume as a MONAI reader's output) and
``weights`` (weights loading that never unpickles).
"""

from medplug import lean_imports

lean_imports.install()  # MONAI without transformers/matplotlib, even if imported directly
