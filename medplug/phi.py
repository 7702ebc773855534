"""Scrub obvious PHI patterns from free text before it leaves a plugin.

Radiology reports are patient data. Anything medplug emits that is derived
from report text (tokens in attributions, warnings, log lines) goes through
``scrub`` first. The patterns are deliberately simple and over-eager: names
after titles, dates, phone numbers, MRN-like numbers and e-mail addresses are
replaced by ``XXXX``, the placeholder the Open-i / IU X-ray de-identification
already uses (existing ``XXXX`` placeholders are left as they are). This is a
safety net for output, not a de-identification tool for releasing data.
"""

from __future__ import annotations

import logging
import re

PLACEHOLDER = "XXXX"

_MONTH = (
    r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|Jun(?:e)?|Jul(?:y)?"
    r"|Aug(?:ust)?|Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)"
)
_NAME = r"[A-Z][A-Za-z'\-]+"

# Order matters: e-mails and ID labels before bare numbers, dates before phone numbers.
_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("email", re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")),
    (
        "id",
        re.compile(
            r"\b(?:MRN|MR\s?#|Medical\s+Record(?:\s+(?:Number|No\.?))?|Patient\s+ID|Acc(?:ession)?"
            r"(?:\s+(?:Number|No\.?|#))?)(?![a-z])\s*[:#]?\s*(?=[A-Z\-]*\d)[A-Z0-9][A-Z0-9\-]{3,}",
            re.IGNORECASE,
        ),
    ),
    (
        "date",
        re.compile(
            r"\b\d{4}[-/.]\d{1,2}[-/.]\d{1,2}\b"  # 2021-03-04
            r"|\b\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}\b"  # 03/04/2021
            rf"|\b{_MONTH}\.?\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}}\b"  # March 4, 2021
            rf"|\b\d{{1,2}}(?:st|nd|rd|th)?\s+{_MONTH}\.?,?\s+\d{{4}}\b",  # 4 March 2021
            re.IGNORECASE,
        ),
    ),
    ("phone", re.compile(r"(?:\+?1[\s.-]?)?(?:\(\d{3}\)\s?|\b\d{3}[\s.-])\d{3}[\s.-]\d{4}\b")),
    ("number", re.compile(r"\b\d{6,}\b")),  # MRN-like bare numbers; no measurement has 6 digits
]
# Names after a title: the title stays (it reads as context), up to three name words go.
_TITLED_NAME = re.compile(rf"\b(Dr|Mr|Mrs|Ms|Miss|Prof)(\.?\s+)({_NAME}(?:\s+{_NAME}){{0,2}})")


def scrub(text: str) -> str:
    """``text`` with every PHI-like span replaced by ``XXXX``."""
    for _kind, pattern in _PATTERNS:
        text = pattern.sub(PLACEHOLDER, text)
    return _TITLED_NAME.sub(_replace_name, text)


def _replace_name(match: re.Match[str]) -> str:
    words = match.group(3).split()
    return match.group(1) + match.group(2) + " ".join(PLACEHOLDER for _ in words)


def contains_phi(text: str) -> bool:
    """Whether ``scrub`` would change ``text`` (for checks and tests)."""
    return scrub(text) != text


class PhiScrubFilter(logging.Filter):
    """A logging filter that scrubs each record's final message.

    Attach it to handlers that may see free text from third-party code
    (``handler.addFilter(PhiScrubFilter())``); medplug's own code never logs
    report text in the first place.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = scrub(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True
