"""DICOM out: the objects medplug writes back beside the images it read.

The mirror of ``medplug.ingest`` (DICOM in). Batch, listener and ``medplug serve``
all build their outputs here, from the same evidence (``evidence.study_evidence``):

- ``sr``: a TID 1500 Measurement Report (label, probabilities, segment volumes);
- ``parametric_map``: the heatmap as a Parametric Map on the source slices;
- ``seg``: a plugin's label map as a DICOM Segmentation on the source slices;
- ``heatmap_sc``: the heatmap burnt into an RGB Secondary Capture, for viewers
  that cannot overlay a map;
- ``deidentify``: the PS3.15 basic profile with a local pseudonym map;
- ``job``: one study's objects built, de-identified and written as one picklable job.

Nothing is imported here, so ``import medplug.dicom_out.evidence`` stays light.
"""

# How batch, listener and serve write a heatmap (``--heatmap-format``).
HEATMAP_FORMATS = ("pm", "sc", "none")
