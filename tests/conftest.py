"""Shared fixtures. Area-specific fixtures live beside their tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def sample_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small generated cohort (see ``medplug.sampledata``), made once per test run."""
    from medplug.sampledata import generate_cohort

    return generate_cohort(tmp_path_factory.mktemp("cohort"), n_cases=12, seed=0)
