"""``torchscript``: a TorchScript file plus a small JSON description (see ``plugin``)."""

PLUGIN_NAME = "torchscript"
DESCRIPTION_NAME = "torchscript.json"
MODEL_NAME = "model.ts"
