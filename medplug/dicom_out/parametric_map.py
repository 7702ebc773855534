"""A heatmap as a DICOM Parametric Map on the source series' own slices.

Unlike the Secondary Capture (one burnt-in RGB slice), a Parametric Map keeps
every slice, registered to the source: same Frame of Reference, one frame per
source slice with that slice's position and orientation, a reference to the
source series, and a Real World Value Mapping that says what the numbers
mean. Viewers that implement the IHE AI Results profile can scroll, window
and overlay it. The values are the plugin's relevance (Grad-CAM for the image
plugin) scaled to 0..1 by the map's own maximum (unitless), stored as 32-bit
floats.
"""

from __future__ import annotations

import highdicom as hd
import numpy as np
from highdicom.sr import CodedConcept
from pydicom.sr.codedict import codes

from medplug.dicom_out.equipment import derived_object_attributes
from medplug.dicom_out.evidence import StudyEvidence
from medplug.dicom_out.grid import check_frames_match, volume_frames
from medplug.dicom_out.sr import CODING_SCHEME

PM_SERIES_NUMBER = 9903
# No standard code says "model relevance"; a private one in medplug's scheme (PS3.16 8.2).
RELEVANCE = CodedConcept(
    value="RELEVANCE", scheme_designator=CODING_SCHEME, meaning="Model relevance (Grad-CAM)"
)


def normalised_relevance(frames: np.ndarray) -> np.ndarray:
    """Non-negative relevance scaled to 0..1 by its maximum (all zero stays zero), float32.

    Works in place on a float32 array (the frame copy), so a CT-sized map is held once.
    """
    values = frames if frames.dtype == np.float32 else frames.astype(np.float32)
    np.nan_to_num(values, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    np.clip(values, 0.0, None, out=values)
    peak = float(values.max()) if values.size else 0.0
    if peak > 0:
        values /= peak
    return values


def relevance_mapping() -> hd.pm.RealWorldValueMapping:
    """Stored value = real world value: relevance 0..1, no units."""
    return hd.pm.RealWorldValueMapping(
        lut_label="RELEVANCE",
        lut_explanation="Model relevance, 0 (none) to 1 (the map's maximum)",
        unit=codes.UCUM.NoUnits,
        value_range=(0.0, 1.0),
        slope=1.0,
        intercept=0.0,
        quantity_definition=RELEVANCE,
    )


def build_parametric_map(
    heatmap: np.ndarray,
    evidence: StudyEvidence,
    plugin: str,
    plugin_version: str,
    series_uid: str,
    sop_uid: str,
) -> hd.pm.ParametricMap:
    """``heatmap`` (on the source volume's grid, (i, j, k)) as a PM in the source study."""
    check_frames_match(evidence, heatmap.shape)
    frames = volume_frames(np.asarray(heatmap, dtype=np.float32))
    if np.shares_memory(frames, heatmap):  # normalised in place: never the caller's array
        frames = frames.copy()
    frames = normalised_relevance(frames)
    pm = hd.pm.ParametricMap(
        source_images=evidence.source_images(),
        pixel_array=frames,
        **derived_object_attributes(plugin, plugin_version, series_uid, PM_SERIES_NUMBER, sop_uid),
        contains_recognizable_visual_features=False,
        real_world_value_mappings=[relevance_mapping()],
        voi_lut_transformations=[hd.VOILUTTransformation(window_center=0.5, window_width=1.0)],
        content_label="RELEVANCE",
        content_description=f"{plugin} relevance map"[:64],
        series_description=f"medplug {plugin} heatmap"[:64],
    )
    # General Series Laterality is type 2C; present (empty if unknown) keeps validators content.
    pm.Laterality = evidence.reference.get("Laterality", "")
    return pm
