# Every target installs what it needs first, so each works from a fresh clone.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install train ensemble pretrained test lint simulate bench clean

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

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

train: install
	$(BIN)/lenscnn-train experiment=quickstart

# Four realistic members (seeds 1-4), trained once; then each member and their ensemble scored on
# the same fixed test set, with the ensemble calibrated on the validation set (outputs/ensemble/realistic/eval).
ENSEMBLE := outputs/ensemble/realistic

ensemble: $(ENSEMBLE)/.trained
	$(BIN)/lenscnn-eval ensemble=realistic compare_members=true calibrate=true hydra.run.dir=$(ENSEMBLE)/eval

$(ENSEMBLE)/.trained: | $(STAMP)
	$(BIN)/lenscnn-train -m experiment=realistic_ensemble
	touch $@

# The pretrained ensemble shipped in the package (src/lenscnn/pretrained/realistic) and the metrics of its
# model card: the four members above exported weights-only in float16, calibrated on the validation set,
# scored on the fixed test sets (what `lenscnn-eval ensemble=pretrained [prior=...]` reproduces): the
# realistic mixture, held-out galaxies with lens light, Sersic sources with lens light, and the quickstart
# Sersic set without lens light. Training is deterministic, so this rebuilds the shipped files bit for bit
# (same torch, same CPU).
PRETRAINED := src/lenscnn/pretrained
CARD_SETS := realistic_galaxies realistic_sersic quickstart
CARD_METRICS := $(ENSEMBLE)/pretrained/eval/metrics.json $(CARD_SETS:%=$(ENSEMBLE)/pretrained/eval_%/metrics.json)
COMMA := ,
SPACE := $(subst ,, )

pretrained: install $(ENSEMBLE)/.trained
	$(BIN)/lenscnn-export ensemble=realistic out_dir=$(PRETRAINED)/realistic dtype=float16 hydra.run.dir=$(ENSEMBLE)/pretrained/export
	$(BIN)/lenscnn-eval ensemble=pretrained calibrate=true hydra.run.dir=$(ENSEMBLE)/pretrained/calibrate
	$(BIN)/lenscnn-eval ensemble=pretrained compare_members=true hydra.run.dir=$(ENSEMBLE)/pretrained/eval
	for set in $(CARD_SETS); do \
		$(BIN)/lenscnn-eval ensemble=pretrained prior=$$set hydra.run.dir=$(ENSEMBLE)/pretrained/eval_$$set || exit 1; \
	done
	$(BIN)/lenscnn-export card=$(PRETRAINED)/MODEL_CARD.md \
		metrics=[$(subst $(SPACE),$(COMMA),$(CARD_METRICS))] \
		hydra.run.dir=$(ENSEMBLE)/pretrained/card

simulate: install
	$(BIN)/lenscnn-simulate n=64 preview=16

bench: install
	$(BIN)/python benchmarks/sim_throughput.py
	$(BIN)/python benchmarks/train_throughput.py
	$(BIN)/python benchmarks/predict_throughput.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info
