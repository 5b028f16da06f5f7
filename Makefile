# Every target installs what it needs first, so each works from a fresh clone.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install train ensemble pretrained test test-all lint simulate bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade --quiet pip
	# torch first, pinned: a loose requirement would pull a multi-GB CUDA build
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest -q

test-all: install
	$(BIN)/python -m pytest -q -m "slow or not slow"

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

train: install
	$(BIN)/lenscnn-train experiment=quickstart

# Four quickstart members (seeds 1-4), trained once; then each member and their ensemble scored on
# the same fixed test set, with the ensemble calibrated on the validation set (outputs/ensemble/quickstart/eval).
ENSEMBLE := outputs/ensemble/quickstart

ensemble: $(ENSEMBLE)/.trained
	$(BIN)/lenscnn-eval ensemble=quickstart compare_members=true calibrate=true hydra.run.dir=$(ENSEMBLE)/eval

$(ENSEMBLE)/.trained: | $(STAMP)
	$(BIN)/lenscnn-train -m experiment=quickstart_ensemble
	touch $@

# The pretrained ensemble shipped in the package (src/lenscnn/pretrained/quickstart) and the metrics of its
# model card: the four members above exported weights-only in float16, calibrated on the validation set,
# scored on the fixed test set (what `lenscnn-eval ensemble=pretrained` reproduces). Training is
# deterministic, so this rebuilds the shipped files bit for bit (same torch, same CPU).
PRETRAINED := src/lenscnn/pretrained

pretrained: install $(ENSEMBLE)/.trained
	$(BIN)/lenscnn-export ensemble=quickstart out_dir=$(PRETRAINED)/quickstart dtype=float16 hydra.run.dir=$(ENSEMBLE)/pretrained/export
	$(BIN)/lenscnn-eval ensemble=pretrained calibrate=true hydra.run.dir=$(ENSEMBLE)/pretrained/calibrate
	$(BIN)/lenscnn-eval ensemble=pretrained compare_members=true hydra.run.dir=$(ENSEMBLE)/pretrained/eval
	$(BIN)/lenscnn-export card=$(PRETRAINED)/MODEL_CARD.md metrics=$(ENSEMBLE)/pretrained/eval/metrics.json hydra.run.dir=$(ENSEMBLE)/pretrained/card

simulate: install
	$(BIN)/lenscnn-simulate n=64 preview=16

bench: install
	$(BIN)/python benchmarks/sim_throughput.py
	$(BIN)/python benchmarks/train_throughput.py
	$(BIN)/python benchmarks/predict_throughput.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info
