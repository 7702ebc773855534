"""Every generated malformed input ends as a medplug error or a valid load.

The corpus (``make_corpus.py``, ~470 inputs derived from pydicom's test
files) runs through ``load_image`` in two worker processes (``runner.py``)
with a per-input time guard and an address-space limit; peak RSS growth is
measured per input. Nothing else may happen: no foreign exception, no hang,
no allocation beyond the bound, no library warning reaching the terminal.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from make_corpus import build_corpus  # noqa: E402
from runner import RSS_BOUND_MIB, Summary, run_inputs  # noqa: E402

# The faults of the attack on main, each by the category it must now end in.
EXPECTED = {
    "syntax/CT_small_ts_not_a_syntax": "error:unsupported_transfer_syntax",
    "vr/MR_small_bigendian_spacing_vr_ZZ": "error:unreadable",  # NotImplementedError before
    "vr/CT_small_spacing_vr_ZZ": "loaded:128x128",  # medplug's parser reads the value as DS
    "header/CT_small_ipp_2_values": "error:bad_geometry",
    "header/CT_small_spacing_1_value": "error:bad_geometry",
    "header/CT_small_bits_stored_65535": "error:bad_pixel_description",
    "palette/palette_descriptor_zero": "error:bad_lookup_table",
    "stream/MR_small_RLE_rle_runs_overflow": "error:decode_failed",  # a Rust panic before
    "folder/huge_stack_65535": "error:too_large",
    "header/CT_small_ipp_nan": "error:bad_geometry",
    "header/CT_small_spacing_nan": "error:bad_geometry",
    "header/CT_small_orientation_zero": "error:bad_geometry",
    "header/CT_small_slope_nan": "error:bad_rescale",
    "header/CT_small_slope_zero": "error:bad_rescale",
    "header/CT_small_columns_zero": "error:bad_pixel_description",
    "folder/one_nan_slice": "error:bad_geometry",
    "duplicate/emri_three_syntaxes": "loaded:64x64x10",
    "duplicate/emri_two_identical": "loaded:64x64x10",
    "duplicate/stack_with_copy": "loaded:128x128x3",
    "duplicate/stack_with_conflicting_copy": "error:duplicate_instances",
    "truncated/CT_small_at_500": "error:truncated",
    "truncated/MR_small_at_500": "error:truncated",
    "fallback/broken_volume_and_radiograph": "loaded:64x64",
    "fallback/stack_with_cut_file": "error:truncated",
    "folder/good_stack": "loaded:128x128x3",
    "folder/with_report_and_nifti": "loaded:64x64",
    "junk/empty_folder": "error:empty_series",
    "junk/nifti_huge_dims": "error:too_large",
    "regression/jpeg_ls_pixel_length_4GiB": "error:truncated",  # found by make fuzz
    "regression/big_endian_pixel_length_4GiB": "error:truncated",  # found by make fuzz
    "regression/j2k_meta_flip_pixel_length": "error:",  # found by make fuzz
}


@pytest.fixture(scope="module")
def summary(tmp_path_factory: pytest.TempPathFactory) -> Summary:
    cases = build_corpus(tmp_path_factory.mktemp("fuzz") / "corpus")
    return run_inputs([(case.name, case.path) for case in cases], workers=2)


def _listing(summary: Summary, prefix: str) -> list[str]:
    return [
        f"{r.name}: {r.outcome} {r.detail}" for r in summary.results if r.outcome.startswith(prefix)
    ]


def test_corpus_is_large_and_covers_every_family(summary: Summary) -> None:
    assert len(summary.results) >= 400
    families = {r.name.split("/")[0] for r in summary.results}
    assert families >= {
        "header",
        "syntax",
        "palette",
        "truncated",
        "bitflip",
        "length",
        "vr",
        "stream",
        "folder",
        "duplicate",
        "fallback",
        "junk",
    }


def test_no_exception_escapes(summary: Summary) -> None:
    assert _listing(summary, "escaped:") == []


def test_no_input_hangs(summary: Summary) -> None:
    assert _listing(summary, "hang") == []


def test_every_load_is_geometrically_valid(summary: Summary) -> None:
    assert _listing(summary, "invalid:") == []
    assert summary.count("loaded:") > 50  # good inputs and harmless mutations still load


def test_memory_stays_bounded(summary: Summary) -> None:
    worst = summary.worst_memory
    assert worst.peak_growth_mib < RSS_BOUND_MIB, (worst.name, worst.peak_growth_mib)


def test_no_library_warning_reaches_the_terminal(summary: Summary) -> None:
    leaked = [f"{r.name}: {r.detail}" for r in summary.results if r.leaked_warnings]
    assert leaked == []


def test_attack_inputs_end_in_their_categories(summary: Summary) -> None:
    by_name = {r.name: r.outcome for r in summary.results}
    wrong = {
        name: by_name.get(name)
        for name, expected in EXPECTED.items()
        if not (by_name.get(name) or "").startswith(expected)
    }
    assert wrong == {}
