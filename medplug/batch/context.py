"""One run's setup, shared by ``medplug batch`` (either engine) and ``medplug listen``.

Opening an output folder for a run is the same chain everywhere: the folder,
its journal, the check that the folder was started with the same plugins and
options, the labeller that hashes study UIDs for logs and file names, the
local pseudonym map under ``--deidentify``, and the ``StudyProcessor`` that
turns predictions into records. ``RunContext.open`` builds it once; closing it
closes the journal and the map.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from medplug.batch.destinations import Destination
from medplug.batch.identifiers import StudyLabeller
from medplug.batch.journal import Journal
from medplug.batch.outputs import OutputFolder
from medplug.batch.processing import ProcessorSettings, StudyProcessor
from medplug.contract import Plugin
from medplug.dicom_out.deidentify import PseudonymMap

JOURNAL_NAME = "journal.sqlite"


class RunOptions(Protocol):
    """The options ``BatchOptions`` and ``ListenerOptions`` share for opening a run."""

    out_dir: Path
    deidentify: bool
    pseudonym_map: Path | None
    show_identifiers: bool


def plugin_settings(plugins: Sequence[Plugin]) -> list[dict[str, str]]:
    return [{"name": p.info.name, "version": p.info.version} for p in plugins]


def default_pseudonym_map() -> Path:
    """Kept on this machine, outside any output folder that may be shared."""
    return Path.home() / ".local" / "share" / "medplug" / "pseudonyms.sqlite"


@dataclass
class RunContext:
    """An opened output folder: journal, labeller, pseudonyms and the processor."""

    output: OutputFolder
    journal: Journal
    labeller: StudyLabeller
    processor: StudyProcessor
    pseudonyms: PseudonymMap | None = None

    @classmethod
    def open(
        cls,
        options: RunOptions,
        plugins: Sequence[Plugin],
        settings: ProcessorSettings,
        destination: Destination | None = None,
    ) -> RunContext:
        """Open ``options.out_dir`` for a run; refuses a folder started with other settings."""
        output = OutputFolder(options.out_dir)
        journal = Journal(output.root / JOURNAL_NAME)
        try:
            journal.check_settings(
                {"plugins": plugin_settings(plugins), "deidentify": options.deidentify}
            )
            labeller = StudyLabeller(journal.secret(), options.show_identifiers)
            pseudonyms = (
                PseudonymMap(options.pseudonym_map or default_pseudonym_map())
                if options.deidentify
                else None
            )
        except BaseException:
            journal.close()
            raise
        processor = StudyProcessor(
            plugins,
            journal,
            output,
            labeller,
            settings,
            destination=destination,
            pseudonyms=pseudonyms,
        )
        return cls(output, journal, labeller, processor, pseudonyms)

    def close(self) -> None:
        self.journal.close()
        if self.pseudonyms is not None:
            self.pseudonyms.close()
