"""The lean runtime: what start-up imports, the thread policy, progress events.

Each check runs in a fresh interpreter, because what matters is what a new
``medplug`` process imports, not what this test session already has loaded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from medplug.progress import ProgressEvent, report, reporting
from medplug.registry import discover
from medplug.threads import choose_threads

NEVER_AT_RUN_TIME = ("pytest", "dask", "skops", "fastapi", "uvicorn")


def fresh(code: str, **env: str) -> dict:
    """Run ``code`` in a new interpreter; it prints one JSON line."""
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", **env},
        timeout=600,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_runtime_import_chain_has_no_test_or_server_libraries() -> None:
    loaded = fresh(
        "import json, sys\n"
        "import medplug, medplug.cli.main, medplug.ingest.loading, medplug.ingest.monai_reader\n"
        "import medplug_image.plugin, medplug_fusion.plugin, medplug_text.plugin\n"
        f"print(json.dumps([m for m in {NEVER_AT_RUN_TIME!r} if m in sys.modules]))"
    )
    assert loaded == []


def test_listing_plugins_imports_no_plugin_or_torch() -> None:
    loaded = fresh(
        "import json, sys\n"
        "from medplug.cli.main import app\n"
        "sys.argv = ['medplug', 'plugins', '--json']\n"
        "try:\n    app()\nexcept SystemExit:\n    pass\n"
        "heavy = ('torch', 'monai', 'transformers', 'sklearn', 'fastapi', 'pydicom',\n"
        "         'medplug_image.plugin', 'medplug_text.plugin', 'medplug_fusion.plugin')\n"
        "print(json.dumps([m for m in heavy if m in sys.modules]))"
    )
    assert loaded == []


def test_monai_is_imported_without_transformers() -> None:
    loaded = fresh(
        "import json, sys\n"
        "import medplug\n"
        "from medplug_image.networks import build_member\n"
        "from medplug_image.config import ImageModelConfig\n"
        "had = 'transformers' in sys.modules\n"
        "import transformers  # still importable afterwards, for the report plugin\n"
        "print(json.dumps({'during': had, 'after': 'transformers' in sys.modules}))"
    )
    assert loaded == {"during": False, "after": True}


def test_static_descriptions_match_the_imported_plugins() -> None:
    for entry in discover():
        builtin = ("image-classifier", "report-classifier", "fusion", "monai-bundle", "hf-image")
        if entry.name not in (*builtin, "torchscript"):
            continue
        assert entry.static, entry.name
        imported = entry.plugin_class
        assert imported is not None, entry.error
        assert imported.describe() == entry.info


def test_thread_policy_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.delenv("MEDPLUG_THREADS", raising=False)
    assert choose_threads() == (3, "OMP_NUM_THREADS")
    monkeypatch.setenv("MEDPLUG_THREADS", "2")
    assert choose_threads()[0] == 2
    assert choose_threads(requested=5)[0] == 5
    monkeypatch.delenv("MEDPLUG_THREADS")
    monkeypatch.delenv("OMP_NUM_THREADS")
    threads, reason = choose_threads(reserved=10**6)
    assert threads == 1 and "workers" in reason  # never below one thread


def test_cli_threads_option_reaches_torch() -> None:
    threads = fresh(
        "import json, sys\n"
        "from medplug.cli.main import app\n"
        "sys.argv = ['medplug', '--threads', '3', 'plugins']\n"
        "try:\n    app()\nexcept SystemExit:\n    pass\n"
        "import torch\n"
        "from medplug.threads import apply_thread_policy\n"
        "apply_thread_policy()  # as load_plugin does once the plugin imported torch\n"
        "print(json.dumps(torch.get_num_threads()))",
        COLUMNS="200",
    )
    assert threads == 3


def test_progress_events_reach_only_an_installed_receiver() -> None:
    seen: list[ProgressEvent] = []
    report("fine-tune", 1, 3, loss=0.5)  # no receiver: nothing happens
    with reporting(seen.append):
        report("fine-tune", 2, 3, loss=0.25, val_auc=None)
    report("fine-tune", 3, 3, loss=0.1)
    assert [(e.step, e.figures) for e in seen] == [(2, {"loss": 0.25})]
