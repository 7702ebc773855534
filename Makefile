# Two commands on a fresh machine: `make demo` and `make test`. Both build the
# virtual environment themselves: CPU torch first (a bare `torch` requirement
# would pull a multi-GB CUDA build), then medplug with its built-in plugins.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
MEDPLUG := $(VENV)/bin/medplug
TORCH_VERSION ?= 2.13.0
# Where this workplace keeps the CPU torch wheel; harmless elsewhere.
WHEELS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels)
SAMPLE := sample_data/cohort
HOLDOUT := sample_data/holdout
DEMO_CASES ?= 48
MODELS := sample_data/models
export MEDPLUG_MODELS := $(abspath $(MODELS))

.PHONY: venv system-packages demo viewer ohif test lint typecheck fuzz sample-data demo-models bench bench-ingest bench-image bench-text bench-fusion bench-batch bench-serve bench-startup bench-scale clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet $(WHEELS) torch==$(TORCH_VERSION)
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

sample-data: venv
	test -f $(SAMPLE)/manifest.csv || $(MEDPLUG) sample-data $(SAMPLE) --cases $(DEMO_CASES) --seed 0
	test -f $(HOLDOUT)/manifest.csv || $(MEDPLUG) sample-data $(HOLDOUT) --cases 12 --seed 1

# The example third-party segmentation plugin (examples/medplug-lesion-seg) is pip-installed
# like any hospital's own package, then trained by its `medplug train lesion-seg` command.
LESION_SEG := examples/medplug-lesion-seg

demo-models: sample-data
	$(PY) -m medplug.cli.demo train --cohort $(SAMPLE) --models $(MODELS)
	$(PY) -c "import medplug_lesion_seg" 2>/dev/null || \
		$(PY) -m pip install --quiet --no-deps --no-build-isolation -e $(LESION_SEG)
	test -f $(MODELS)/lesion-seg/medplug.json || \
		$(MEDPLUG) train lesion-seg --cohort $(SAMPLE) --out $(MODELS)/lesion-seg

demo: demo-models
	$(PY) -m medplug.cli.demo run --cohort $(HOLDOUT) --models $(MODELS)

# OHIF's published build (npm @ohif/app, pinned and integrity-checked) in .cache/ohif.
ohif: venv
	$(PY) -m medplug.ohif.install --cache .cache/ohif

# The held-out cohort and its batch results in OHIF, on 127.0.0.1 (Ctrl-C stops it).
VIEWER_PORT ?= 8765
viewer: demo-models ohif system-packages
	$(PY) -m medplug.ohif.demo --cohort $(HOLDOUT) --models $(MODELS) --cache .cache/ohif --port $(VIEWER_PORT)

# Debian packages the tests use for real (Orthanc, dcmtk, dciodvfy, Chromium, Xvfb):
# installed when this user can (root or password-less sudo), else listed with the
# tests that will be skipped.
system-packages:
	@bash scripts/system-packages.sh

test: venv system-packages typecheck
	$(PY) -m medplug.ohif.install --cache .cache/ohif || echo "OHIF not installed: tests/test_viewer_ohif.py will be skipped"
	$(PY) -m pytest -q -ra

lint: venv typecheck
	$(VENV)/bin/ruff check .

# Strict type check of the contract, the registry and ingest (files in pyproject's [tool.mypy]).
typecheck: venv
	$(VENV)/bin/mypy

# A few minutes of hypothesis fuzzing of DICOM ingest; findings land in fuzz-findings.json
# (add each to REGRESSIONS in tests/fuzz/make_corpus.py). FUZZ_SECONDS to change the budget.
FUZZ_SECONDS ?= 180
fuzz: venv
	OMP_NUM_THREADS=1 $(PY) tests/fuzz/fuzz_ingest.py --seconds $(FUZZ_SECONDS) --out fuzz-findings.json

bench-ingest: venv
	$(PY) benchmarks/ingest.py

bench-image: venv
	$(PY) benchmarks/image.py

bench-text: venv
	$(PY) benchmarks/text.py

bench-fusion: venv
	$(PY) benchmarks/fusion.py

bench-batch: venv
	$(PY) benchmarks/batch.py

bench-serve: venv
	$(PY) benchmarks/serve.py

# medplug batch --engine local vs ray, one and two simulated nodes (benchmarks/results/scale.md)
bench-scale: venv
	OMP_NUM_THREADS=1 $(PY) benchmarks/scale.py

# Start-up and per-case latency (benchmarks/results/startup.md). BASELINE=/path/to/an/older/checkout
# (with its own .venv) measures it too, side by side.
bench-startup: demo-models
	mkdir -p benchmarks/work
	$(PY) benchmarks/startup.py --cohort $(SAMPLE) --models $(MODELS) --json benchmarks/work/startup-after.json
	$(if $(BASELINE),$(PY) benchmarks/startup.py --repo $(BASELINE) --cohort $(SAMPLE) --models $(MODELS) --json benchmarks/work/startup-before.json)
	$(PY) benchmarks/startup.py --markdown $(if $(BASELINE),before=benchmarks/work/startup-before.json) after=benchmarks/work/startup-after.json

bench: bench-ingest bench-image bench-text bench-fusion bench-batch bench-serve

clean:
	rm -rf $(VENV) $(SAMPLE) $(HOLDOUT) $(MODELS) benchmarks/work .cache/ohif
