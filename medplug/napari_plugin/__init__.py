"""medplug inside napari: a reader for DICOM/NIfTI and a dock widget that runs plugins.

Declared to napari by ``napari.yaml`` (npe2) under the ``napari.manifest`` entry
point. napari is an optional extra (``pip install medplug[napari]``); nothing in
the medplug core imports this package.
"""
