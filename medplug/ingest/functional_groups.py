"""Geometry and rescale of one frame from enhanced multi-frame functional groups.

Enhanced CT/MR/PET objects keep what single-frame files carry at the top level
(ImagePositionPatient, ImageOrientationPatient, PixelSpacing, RescaleSlope...)
inside the Shared and Per-frame Functional Groups Sequences. Both the header
read (first frame, for scan grouping) and the multi-frame loader (every frame)
read them here, so the two never disagree about which group wins: a frame's own
group first, then the shared one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from pydicom.dataset import Dataset

T = TypeVar("T")


@dataclass(frozen=True)
class GroupValues:
    """What one functional group item (or a frame's groups merged) says; ``None`` = absent."""

    position: tuple[float, ...] | None = None
    orientation: tuple[float, ...] | None = None
    spacing: tuple[float, ...] | None = None
    slice_thickness: float | None = None
    spacing_between_slices: float | None = None
    rescale: tuple[float, float] | None = None

    def or_else(self, other: GroupValues) -> GroupValues:
        """Each field from ``self`` where present, else from ``other``."""
        return GroupValues(
            position=_either(self.position, other.position),
            orientation=_either(self.orientation, other.orientation),
            spacing=_either(self.spacing, other.spacing),
            slice_thickness=_either(self.slice_thickness, other.slice_thickness),
            spacing_between_slices=_either(
                self.spacing_between_slices, other.spacing_between_slices
            ),
            rescale=_either(self.rescale, other.rescale),
        )


NOTHING = GroupValues()


def first_item(ds: Dataset | None, keyword: str) -> Dataset | None:
    """The first item of sequence ``keyword`` in ``ds``, or ``None`` (no data set, no items)."""
    sequence = ds.get(keyword) if ds is not None else None
    return sequence[0] if sequence else None


def group_values(group: Dataset | None, *, position_too: bool = True) -> GroupValues:
    """Read one functional group item (a Shared or one Per-frame item).

    ``position_too=False`` leaves a (non-standard) shared PlanePositionSequence
    unread: the header takes the first frame's position from its own group only.
    """
    if group is None:
        return NOTHING
    plane = first_item(group, "PlanePositionSequence") if position_too else None
    orientation = first_item(group, "PlaneOrientationSequence")
    measures = first_item(group, "PixelMeasuresSequence")
    return GroupValues(
        position=_floats(plane, "ImagePositionPatient"),
        orientation=_floats(orientation, "ImageOrientationPatient"),
        spacing=_floats(measures, "PixelSpacing"),
        slice_thickness=_number(measures, "SliceThickness"),
        spacing_between_slices=_number(measures, "SpacingBetweenSlices"),
        rescale=_rescale(first_item(group, "PixelValueTransformationSequence")),
    )


def frame_values(
    ds: Dataset, index: int, *, shared_position: bool = True
) -> tuple[GroupValues, bool]:
    """Frame ``index``'s own functional group over the shared one, and whether it has own groups.

    Without a Per-frame Functional Groups Sequence (legacy multi-frame, cine) only
    the shared group counts and the caller falls back to the top-level attributes.
    """
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    own = per_frame[index] if per_frame and index < len(per_frame) else None
    shared = first_item(ds, "SharedFunctionalGroupsSequence")
    values = group_values(own).or_else(group_values(shared, position_too=shared_position))
    return values, bool(per_frame)


def _floats(item: Dataset | None, keyword: str) -> tuple[float, ...] | None:
    """A multi-valued number attribute present in ``item`` (possibly empty), else ``None``."""
    if item is None or keyword not in item:
        return None
    return tuple(float(v) for v in item[keyword].value)


def _number(item: Dataset | None, keyword: str) -> float | None:
    """A single number attribute with a value in ``item``, else ``None``."""
    if item is None or item.get(keyword) in (None, ""):
        return None
    return float(item.get(keyword))


def _rescale(item: Dataset | None) -> tuple[float, float] | None:
    """``(slope, intercept)`` when ``item`` has a RescaleSlope (intercept 0 if absent)."""
    slope = _number(item, "RescaleSlope")
    if item is None or slope is None:
        return None
    return slope, float(item.get("RescaleIntercept") or 0.0)


def _either(mine: T | None, theirs: T | None) -> T | None:
    return mine if mine is not None else theirs
