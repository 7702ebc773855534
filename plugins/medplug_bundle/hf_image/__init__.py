"""``hf-image``: a local Hugging Face image-classification checkpoint folder (see ``plugin``)."""

PLUGIN_NAME = "hf-image"
