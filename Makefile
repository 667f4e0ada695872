# Two commands matter: `make run` and `make test`. Both set up what they need first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.chorus-installed
CHORUS_ARGS ?=
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu

.PHONY: setup lint run test musicnn-reference test-fast test-fp32 test-services services-up services-down services-status serve clean-state

$(STAMP): requirements.lock pyproject.toml infra/local/install-system-packages.sh
	./infra/local/install-system-packages.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch==2.13.0 (pinned in the lock) from PyTorch's CPU index, as in the Dockerfile: PyPI's own
	# build pulls CUDA (multi-GB). Where that index cannot be reached (a closed network with a local
	# wheel mirror in pip's configuration), pip's configured indexes are used as they are.
	cpu_index=$$($(BIN)/python -c "import urllib.request as r; r.urlopen('$(TORCH_CPU_INDEX)/', timeout=5); \
		print('--extra-index-url $(TORCH_CPU_INDEX)')" 2>/dev/null); \
		$(BIN)/pip install -q $$cpu_index -r requirements.lock
	$(BIN)/pip uninstall -q -y chorus 2>/dev/null || true  # the distribution's name before chorus-crowd-labels
	$(BIN)/pip install -q --no-deps -e .
	# librosa's numba kernels compile into their on-disk caches once, here (about 40 s), instead of
	# in every worker of the first run's feature stage
	$(BIN)/python -c "from chorus.config import FeatureSettings; from chorus.features.backend import warm_extractor; warm_extractor(FeatureSettings())"
	# the default demo and pretext corpora are rendered once into the user's render cache
	# (~/.cache/chorus/renders, about a minute), so a fresh clone's first run takes its clips from there
	$(BIN)/python -c "import tempfile; from chorus.config import load_settings; from chorus.datasets.pretext import prerender; \
		s = load_settings(); d = tempfile.TemporaryDirectory(); prerender(s.demo, s.train.backbone, d.name)"
	# musicnn's trained weights (ISC): the wheel is read, never installed (its code needs TensorFlow 1).
	$(BIN)/pip download -q --no-deps musicnn==0.1.0 -d $(VENV)/share/chorus/wheels
	# basic-pitch's note model (Apache-2.0): its ONNX graph is read from the wheel, never installed (it needs TensorFlow).
	$(BIN)/pip download -q --no-deps basic-pitch==0.4.0 -d $(VENV)/share/chorus/wheels
	touch $(STAMP)

setup: $(STAMP)

## Run the whole pipeline on the embedded demo corpus (offline); prints where every output is.
run: setup
	$(BIN)/chorus $(CHORUS_ARGS) run

## Lint and type-check: ruff (pyflakes, pycodestyle, import order, the library's banned imports) and mypy on src/.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy

## Run the test suite, on two workers (a module per worker at a time; TEST_WORKERS=0 runs it in one process).
TEST_WORKERS ?= 2
test: setup
	./infra/local/install-system-packages.sh --test
	$(BIN)/python -m pytest $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

## The suite with every training in fp32, as on a CPU without bf16 units (the timing issue 41 asks for).
test-fp32: setup
	./infra/local/install-system-packages.sh --test
	CHORUS_TEST_TRAIN_PRECISION=fp32 $(BIN)/python -m pytest $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

## The service tier alone: real Prefect/MLflow/PostgreSQL/Dask processes, deployments, the UIs in Chromium.
test-services: setup
	./infra/local/install-system-packages.sh --test
	$(BIN)/python -m pytest -m services

## Start the local services (Prefect server, MLflow on PostgreSQL, Dask scheduler + workers, chorus serve).
services-up: setup
	./infra/local/install-system-packages.sh --services
	./infra/local/services.sh up

## Stop them (chorus serve and workers first, PostgreSQL last).
services-down:
	./infra/local/services.sh down

services-status:
	./infra/local/services.sh status

## Unit tests only (no whole-pipeline flow test).
test-fast: setup
	$(BIN)/python -m pytest -m "not slow and not services"

## Delete everything the default run wrote.
clean-state:
	rm -rf .chorus

## Rebuild tests/fixtures/musicnn_reference.npz from musicnn's original TensorFlow graphs (a separate
## environment with tensorflow-cpu and tf-keras; `make test` does not need it).
musicnn-reference: setup
	test -x .venv-tf/bin/python || $(PYTHON) -m venv .venv-tf
	.venv-tf/bin/pip install -q tensorflow-cpu==2.21.0 tf-keras==2.21.0 librosa==0.11.0
	.venv-tf/bin/pip install -q --no-deps $(VENV)/share/chorus/wheels/musicnn-0.1.0-py3-none-any.whl
	corpus=$$($(BIN)/python -m chorus_bench.real_music) && TF_USE_LEGACY_KERAS=1 .venv-tf/bin/python infra/musicnn/reference.py \
		tests/fixtures/musicnn_reference.npz $$corpus/fretsonfire-songs-muldjord/armygeddon-song.ogg $$corpus/drascula-music/track2.ogg
