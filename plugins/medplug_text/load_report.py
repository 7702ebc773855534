"""transformers' weight-loading report as one plain line.

When a backbone is loaded for sequence classification, transformers logs a
"LOAD REPORT" table (ANSI-coloured on a terminal) listing ``classifier.bias |
MISSING``: normal for a new head, but it reads like an error in a training
log. This filter rewrites that record to one line that says what happened and
whether it is expected (only the classification head missing); anything else
(other missing weights, mismatched shapes) stays a warning, still in one line.
"""

from __future__ import annotations

import logging
import re

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_ROW = re.compile(r"^\s*(\S+)\s*\|\s*([A-Z_]+)\b")
HEAD_PREFIXES = ("classifier.", "score.", "pre_classifier.")
# A masked-LM checkpoint has no pooler; the classifier's pooler is new along with the head.
POOLER = "pooler."


def is_head(key: str) -> bool:
    return key.startswith(HEAD_PREFIXES) or key.startswith(POOLER) or f".{POOLER}" in key


def summarise(message: str) -> tuple[str, bool]:
    """(one-line summary, whether it is expected) of a transformers load report."""
    lines = _ANSI.sub("", message).splitlines()
    title = lines[0].replace("LOAD REPORT", "loaded").strip() if lines else "model loaded"
    by_status: dict[str, list[str]] = {}
    for line in lines[1:]:
        match = _ROW.match(line)
        if match and match.group(2) not in ("STATUS",) and match.group(1) != "Key":
            by_status.setdefault(match.group(2), []).append(match.group(1))
    missing = by_status.pop("MISSING", [])
    unexpected = by_status.pop("UNEXPECTED", [])
    head_only = all(is_head(key) for key in missing)
    parts = []
    if missing:
        what = "new classification head initialised" if head_only else "weights initialised"
        parts.append(f"{what} ({', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''})")
    if unexpected:
        parts.append(f"{len(unexpected)} checkpoint weights not used (e.g. {unexpected[0]})")
    for status, keys in by_status.items():
        parts.append(f"{len(keys)} {status.lower()} (e.g. {keys[0]})")
    expected = head_only and not by_status
    if expected and missing:
        parts.append("as expected for a new task head")
    return f"{title}: {'; '.join(parts) or 'see transformers log'}", expected


class LoadReportFilter(logging.Filter):
    """Rewrites "LOAD REPORT" records in place; expected ones drop to INFO."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "LOAD REPORT" not in message:
            return True
        summary, expected = summarise(message)
        record.msg, record.args = summary, ()
        if expected:
            record.levelno, record.levelname = logging.INFO, "INFO"
            logging.getLogger("medplug_text").info(summary)
            return False  # said once, on medplug's logger, as information
        return True


_FILTER = LoadReportFilter()


def install() -> None:
    """Attach the filter to transformers' model-loading logger (idempotent)."""
    logger = logging.getLogger("transformers.modeling_utils")
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
