"""Shared fixtures. Area-specific fixtures live beside their tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def sample_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small generated cohort (see ``medplug.sampledata``), made once per test run."""
    from medplug.sampledata import generate_cohort

    return generate_cohort(tmp_path_factory.mktemp("cohort"), n_cases=12, seed=0)


@pytest.fixture(scope="module")
def intensity_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The batch tests' mean-intensity plugin, installed as a third party would."""
    from batch_support import install_intensity_plugin

    return install_intensity_plugin(tmp_path_factory.mktemp("intensity_plugin"))


@pytest.fixture(scope="module")
def intensity_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Its model folder: lesion when the mean HU is well above air."""
    from batch_support import intensity_model

    return intensity_model(tmp_path_factory.mktemp("intensity_model"), centre=-800.0, scale=20.0)
