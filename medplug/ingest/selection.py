"""Declarative series selection: which series of a study a plugin should see.

A rule is a small dict (JSON-friendly, no code) in the spirit of MONAI Deploy's
``DICOMSeriesSelectorOperator``; rules are tried in order and the first rule
that matches a series wins. Every rule reports, per series, which condition
passed or failed, so ``medplug inspect`` can say *why*.

    {"name": "ct-axial", "modality": ["CT"], "description": "(?i)axial|body",
     "exclude_description": "(?i)scout|localizer", "image_type": ["ORIGINAL"],
     "min_slices": 20, "orientation": "axial"}

MONAI Deploy's layout is accepted as well:
``{"selections": [{"name": "CT", "conditions": {"Modality": "(?i)CT",
"SeriesDescription": "(?i)axial", "ImageType": ["PRIMARY"]}}]}``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

from medplug.errors import MedplugError
from medplug.ingest.scan import ScanResult, SeriesInfo

ORIENTATIONS = {"axial", "coronal", "sagittal", "oblique"}


class SelectionRuleError(MedplugError):
    """A selection rule is malformed (unknown key, bad regex, bad orientation)."""


@dataclass
class SelectionRule:
    """Conditions a series must meet; ``None`` means 'any'."""

    name: str = "rule"
    modality: list[str] | None = None
    description: str | None = None  # regex searched in SeriesDescription
    exclude_description: str | None = None
    image_type: list[str] | None = None  # all of these values must be present
    min_slices: int = 1
    orientation: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.modality, str):
            self.modality = [self.modality]
        if isinstance(self.image_type, str):
            self.image_type = [self.image_type]
        if self.orientation is not None and self.orientation not in ORIENTATIONS:
            raise SelectionRuleError(
                f"rule {self.name!r}: orientation must be one of {sorted(ORIENTATIONS)}"
            )
        for pattern in (self.description, self.exclude_description):
            if pattern is not None:
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise SelectionRuleError(
                        f"rule {self.name!r}: bad regex {pattern!r}: {exc}"
                    ) from None

    def check(self, series: SeriesInfo) -> tuple[bool, list[str]]:
        """Whether the series matches, and one line per condition saying why."""
        reasons: list[str] = []
        ok = True

        def note(passed: bool, text: str) -> None:
            nonlocal ok
            ok = ok and passed
            reasons.append(("ok: " if passed else "no: ") + text)

        if self.modality:
            wanted = [m.upper() for m in self.modality]
            note(
                series.modality.upper() in wanted, f"modality {series.modality or '-'} in {wanted}"
            )
        description = series.description or ""
        if self.description is not None:
            note(
                re.search(self.description, description) is not None,
                f"description matches /{self.description}/",
            )
        if self.exclude_description is not None:
            note(
                re.search(self.exclude_description, description) is None,
                f"description does not match /{self.exclude_description}/",
            )
        if self.image_type:
            present = set(series.image_type)
            wanted_types = [t.upper() for t in self.image_type]
            note(
                all(t in present for t in wanted_types),
                f"image type {'/'.join(series.image_type) or '-'} has {wanted_types}",
            )
        if self.min_slices > 1:
            note(
                series.n_slices >= self.min_slices, f"{series.n_slices} >= {self.min_slices} slices"
            )
        if self.orientation:
            note(series.orientation == self.orientation, f"orientation {series.orientation}")
        return ok, reasons

    def to_dict(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if value is not None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SelectionRule:
        if "conditions" in data:
            return _from_monai_deploy(data)
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise SelectionRuleError(
                f"unknown selection rule key(s) {sorted(unknown)}; known: {sorted(known)}"
            )
        return cls(**dict(data))


def _from_monai_deploy(data: Mapping[str, Any]) -> SelectionRule:
    """Translate a MONAI Deploy selection (``conditions`` on DICOM keywords)."""
    conditions = dict(data["conditions"])
    rule: dict[str, Any] = {"name": data.get("name", "rule")}
    if "Modality" in conditions:
        value = conditions.pop("Modality")
        rule["modality"] = [value] if not _is_regex(value) else _regex_modalities(value)
    if "SeriesDescription" in conditions:
        rule["description"] = conditions.pop("SeriesDescription")
    if "ImageType" in conditions:
        rule["image_type"] = list(conditions.pop("ImageType"))
    conditions.pop("StudyDescription", None)  # matched by every study here
    if conditions:
        raise SelectionRuleError(
            f"rule {rule['name']!r}: unsupported condition(s) {sorted(conditions)}"
        )
    return SelectionRule(**rule)


def _is_regex(value: str) -> bool:
    return any(char in value for char in "()|?*[]")


def _regex_modalities(pattern: str) -> list[str]:
    """``(?i)CT|MR`` -> ["CT", "MR"]: modalities are codes, so a regex means a list."""
    body = re.sub(r"\(\?i\)", "", pattern)
    return [part.strip("()^$ ") for part in body.split("|") if part.strip("()^$ ")]


# The rules used when none are given: a volumetric CT/MR/PT series first, then any image.
# What ``load_rules`` (and every ``rules=`` argument) accepts: rules or rule dicts,
# ``{"rules": [...]}``, MONAI Deploy ``{"selections": [...]}``, JSON text or a JSON
# file's path; ``None`` means ``DEFAULT_RULES``.
RulesSource: TypeAlias = (
    SelectionRule
    | Sequence[SelectionRule | Mapping[str, Any]]
    | Mapping[str, Any]
    | str
    | Path
    | None
)

DEFAULT_RULES: list[SelectionRule] = [
    SelectionRule(
        name="volume",
        modality=["CT", "MR", "PT"],
        exclude_description=r"(?i)scout|localizer|topogram|surview|dose report",
        min_slices=5,
    ),
    SelectionRule(name="radiograph", modality=["CR", "DX", "DR", "MG"]),
    SelectionRule(name="any-image"),
]


@dataclass
class SeriesSelection:
    """A series chosen by a rule, with the reasons; rank 0 is the one a case uses."""

    series: SeriesInfo
    rule: str
    rank: int
    reasons: list[str] = field(default_factory=list)


@dataclass
class SeriesDecision:
    """For ``inspect``: every series with the first matching rule (or why none did)."""

    series: SeriesInfo
    selected_rank: int | None
    rule: str | None
    reasons: list[str]


def load_rules(source: RulesSource) -> list[SelectionRule]:
    """Rules from dicts, ``{"rules": [...]}``, MONAI Deploy ``selections``, JSON text or a file."""
    if source is None:
        return list(DEFAULT_RULES)
    if isinstance(source, SelectionRule):
        return [source]
    data: Any = source  # narrowed step by step below: path -> text -> JSON -> list
    if isinstance(source, str | Path) and not str(source).lstrip().startswith(("{", "[")):
        try:
            data = Path(source).read_text()
        except OSError as exc:
            raise SelectionRuleError(f"cannot read selection rules from {source}: {exc}") from None
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as exc:
            raise SelectionRuleError(f"selection rules are not valid JSON: {exc}") from None
    if isinstance(data, Mapping):
        if "selections" in data:
            data = data["selections"]
        elif "rules" in data:
            data = data["rules"]
        else:
            data = [data]
    if not isinstance(data, Sequence):
        raise SelectionRuleError(f"selection rules must be a list of dicts, got {type(data)}")
    return [r if isinstance(r, SelectionRule) else SelectionRule.from_dict(r) for r in data]


def _rank_key(series: SeriesInfo) -> tuple[int, int]:
    # Among series that match the same rule: most slices first, then lowest series number.
    return (-series.n_slices, series.number if series.number is not None else 1 << 30)


def explain_selection(scan: ScanResult, rules: RulesSource = None) -> list[SeriesDecision]:
    """Every series of the scan with the rule that picked it, or every rule's reasons."""
    rule_list = load_rules(rules)
    chosen = {id(s.series): s for s in select_series(scan, rule_list)}
    decisions = []
    for series in scan.series:
        if id(series) in chosen:
            selection = chosen[id(series)]
            decisions.append(
                SeriesDecision(series, selection.rank, selection.rule, selection.reasons)
            )
            continue
        reasons = []
        for rule in rule_list:
            _, rule_reasons = rule.check(series)
            failed = [r for r in rule_reasons if r.startswith("no: ")]
            reasons.append(f"{rule.name}: " + "; ".join(r[4:] for r in failed) if failed else "")
        decisions.append(SeriesDecision(series, None, None, [r for r in reasons if r]))
    return decisions


def select_series(scan: ScanResult, rules: RulesSource = None) -> list[SeriesSelection]:
    """Series matching the rules, best first: by rule order, then most slices.

    ``rules``: ``None`` (``DEFAULT_RULES``), ``SelectionRule`` objects, dicts,
    JSON text or a JSON file path (see module docstring).
    """
    rule_list = load_rules(rules)
    selections: list[SeriesSelection] = []
    taken: set[int] = set()
    for rule in rule_list:
        matches = []
        for series in scan.series:
            if id(series) in taken:
                continue
            ok, reasons = rule.check(series)
            if ok:
                matches.append((series, reasons))
        for series, reasons in sorted(matches, key=lambda m: _rank_key(m[0])):
            taken.add(id(series))
            selections.append(
                SeriesSelection(series, rule.name, len(selections), reasons or ["ok: any series"])
            )
    return selections
