"""Study identifiers as they may appear in logs: keyed hashes, never the UID itself.

A study UID or accession number can be looked up in a RIS, so logs show
``s-<12 hex>``, an HMAC under a secret kept in the output folder's journal:
the same study hashes the same way within a run and its reruns, and a log
line alone cannot be matched back to a patient.
"""

from __future__ import annotations

import hashlib
import hmac


class StudyLabeller:
    """Turns a study UID into the label used in logs and file names."""

    def __init__(self, secret: str, show_identifiers: bool = False) -> None:
        self._secret = secret.encode()
        self.show_identifiers = show_identifiers

    def hash(self, study_uid: str) -> str:
        digest = hmac.new(self._secret, study_uid.encode(), hashlib.sha256).hexdigest()
        return f"s-{digest[:12]}"

    def for_log(self, study_uid: str) -> str:
        """What a log line may show: the hash, or the UID when the user asked for it."""
        return study_uid if self.show_identifiers else self.hash(study_uid)
