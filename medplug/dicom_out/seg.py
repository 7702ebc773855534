"""A plugin's label map as a DICOM Segmentation on the source series' own slices.

``Prediction.segmentation`` is an integer label map on the input grid (see
``medplug.contract.Segmentation``); each declared ``Segment`` becomes one SEG
segment with its coded category and type, and one frame per source slice with
that slice's position (BINARY, empty frames kept, so frame k always belongs to
slice k and a viewer needs no lookup). The segment numbers are the plugin's label
values, so the SR's volume measurements can cite them.
"""

from __future__ import annotations

import highdicom as hd
import numpy as np
from highdicom.sr import CodedConcept
from pydicom.sr.codedict import codes

from medplug.contract import CodedConcept as ContractConcept
from medplug.contract import Segment, Segmentation
from medplug.dicom_out.equipment import derived_object_attributes
from medplug.dicom_out.evidence import StudyEvidence
from medplug.dicom_out.grid import GeometryMismatchError, check_frames_match, volume_frames

SEG_SERIES_NUMBER = 9904


def coded(concept: ContractConcept) -> CodedConcept:
    return CodedConcept(
        value=concept.value, scheme_designator=concept.scheme, meaning=concept.meaning
    )


def segment_numbers(segmentation: Segmentation) -> list[Segment]:
    """The declared segments in SEG order (ascending label value), checked."""
    segments = sorted(segmentation.segments, key=lambda segment: segment.value)
    values = [segment.value for segment in segments]
    if not segments:
        raise GeometryMismatchError("the segmentation declares no segments")
    if len(set(values)) != len(values) or values[0] < 1:
        raise GeometryMismatchError(f"segment values must be distinct and >= 1, got {values}")
    return segments


def build_segmentation(
    segmentation: Segmentation,
    evidence: StudyEvidence,
    plugin: str,
    plugin_version: str,
    series_uid: str,
    sop_uid: str,
) -> hd.seg.Segmentation:
    """The label map (i, j, k on the source volume's grid) as a BINARY SEG in the source study."""
    label_map = np.asarray(segmentation.label_map)
    check_frames_match(evidence, label_map.shape)
    segments = segment_numbers(segmentation)
    algorithm = hd.AlgorithmIdentificationSequence(
        name=plugin[:64], version=plugin_version[:64], family=codes.cid7162.ArtificialIntelligence
    )
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=segment.label[:64],
            segmented_property_category=coded(segment.category),
            segmented_property_type=coded(segment.type),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            tracking_uid=hd.UID(),
            tracking_id=f"{plugin} {segment.label}"[:64],
        )
        for number, segment in enumerate(segments, start=1)
    ]
    frames = volume_frames(label_map)  # (frames, rows, columns)
    # one binary channel per segment, numbered 1..n in ``segments`` order
    masks = np.stack([frames == segment.value for segment in segments], axis=-1)
    seg = hd.seg.Segmentation(
        source_images=evidence.source_images(),
        pixel_array=masks,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        **derived_object_attributes(plugin, plugin_version, series_uid, SEG_SERIES_NUMBER, sop_uid),
        omit_empty_frames=False,
        content_label="SEGMENTATION",
        content_description=f"{plugin} segmentation"[:64],
        series_description=f"medplug {plugin} segmentation"[:64],
    )
    return seg
