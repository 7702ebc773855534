"""Build a real third-party plugin distribution and pip-install it into a folder.

Tests use this to show that medplug finds plugins the way a hospital's own
package would be found: through an installed distribution's entry points.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path


def install_plugin_distribution(
    root: Path,
    distribution: str,
    module: str,
    source: str,
    entry_points: dict[str, str],
    version: str = "1.0",
) -> Path:
    """Write ``module`` with ``source`` as distribution ``distribution``, install it into
    ``root/site`` (add that folder to ``sys.path`` or ``PYTHONPATH``), return the folder."""
    project = root / f"{distribution}-project"
    (project / module).mkdir(parents=True, exist_ok=True)
    (project / module / "__init__.py").write_text(source)
    entries = "\n".join(f'{name} = "{target}"' for name, target in entry_points.items())
    (project / "pyproject.toml").write_text(
        textwrap.dedent(f"""
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "{distribution}"
        version = "{version}"
        [tool.setuptools]
        packages = ["{module}"]
        [project.entry-points."medplug.plugins"]
        """)
        + entries
        + "\n"
    )
    site = root / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(site), str(project)],
        check=True,
    )  # fmt: skip
    return site
