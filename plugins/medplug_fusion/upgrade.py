"""Rewrite an old fusion model folder's ``clinical.skops`` as ``clinical.json``.

``python -m medplug_fusion.upgrade FOLDER``: needs skops once (to read the old
file); afterwards the folder loads without skops or scikit-learn. The folder's
``medplug.json`` is rewritten with the new file's hash.
"""

from __future__ import annotations

import sys
from pathlib import Path

from medplug_fusion.clinical import LEGACY_FILE_NAME


def upgrade(folder: Path) -> bool:
    """Convert ``folder`` in place; False when there was nothing to convert."""
    from medplug_fusion.plugin import FusionPlugin

    legacy = Path(folder) / LEGACY_FILE_NAME
    if not legacy.is_file():
        return False
    plugin = FusionPlugin.from_pretrained(folder, explain=False)  # verifies the old hashes
    plugin.save_pretrained(folder)
    legacy.unlink()
    return True


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m medplug_fusion.upgrade MODEL_FOLDER...", file=sys.stderr)
        return 2
    for name in argv:
        done = upgrade(Path(name))
        print(f"{name}: {'rewritten with clinical.json' if done else 'already current'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
