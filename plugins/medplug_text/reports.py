"""Report text handling: PHI scrub, unicode/whitespace normalisation, sections.

Everything the model sees goes through ``prepare_report`` in training and at
prediction time, so both see the same text; the scrub runs first so tokens
shown in attributions never carry PHI. ``XXXX`` placeholders (the IU X-ray
de-identification) survive unchanged.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

from medplug.phi import scrub

# Common radiology report headings, mapped to a canonical section name.
SECTION_ALIASES: dict[str, str] = {
    "indication": "indication",
    "indications": "indication",
    "clinical indication": "indication",
    "history": "indication",
    "clinical history": "indication",
    "reason for exam": "indication",
    "reason for examination": "indication",
    "comparison": "comparison",
    "comparisons": "comparison",
    "technique": "technique",
    "findings": "findings",
    "finding": "findings",
    "impression": "impression",
    "impressions": "impression",
    "conclusion": "impression",
    "conclusions": "impression",
    "opinion": "impression",
}
DEFAULT_SECTIONS = ("findings", "impression")

_HEADING = re.compile(
    r"(?:^|(?<=[\s.]))("
    + "|".join(sorted(map(re.escape, SECTION_ALIASES), key=len, reverse=True))
    + r")\s*:",
    re.IGNORECASE,
)


def normalise(text: str) -> str:
    """NFKC unicode, no control characters, single spaces."""
    text = unicodedata.normalize("NFKC", text)
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    return re.sub(r"\s+", " ", text).strip()


def extract_sections(text: str) -> dict[str, str]:
    """Split a report on headings such as ``FINDINGS:``; ``{}`` when it has none.

    Text before the first heading is kept under ``"preamble"``. A repeated
    heading's text is appended to the first one.
    """
    matches = list(_HEADING.finditer(text))
    if not matches:
        return {}
    sections: dict[str, str] = {}
    preamble = text[: matches[0].start()].strip()
    if preamble:
        sections["preamble"] = preamble
    for match, following in zip(matches, [*matches[1:], None], strict=True):
        name = SECTION_ALIASES[match.group(1).lower()]
        end = following.start() if following else len(text)
        body = text[match.end() : end].strip()
        sections[name] = f"{sections[name]} {body}".strip() if name in sections else body
    return sections


def prepare_report(text: str, sections: Sequence[str] | None = DEFAULT_SECTIONS) -> str:
    """The text a model reads: scrubbed, normalised, the chosen sections when present.

    A report without headings (or without any of ``sections``) is used whole,
    so free-text reports are never dropped. ``sections=None`` keeps everything.
    """
    cleaned = normalise(scrub(text))
    if not sections:
        return cleaned
    found = extract_sections(cleaned)
    chosen = [found[name] for name in sections if found.get(name)]
    return " ".join(chosen) if chosen else cleaned
