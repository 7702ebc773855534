"""``monai-bundle``: a MONAI Bundle folder run as it is (see ``plugin``)."""

PLUGIN_NAME = "monai-bundle"
