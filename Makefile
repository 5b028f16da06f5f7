# Every target installs what it needs first, so each works from a fresh clone.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install train ensemble space-ensemble euclid-ensemble pretrained pretrained-space pretrained-euclid test test-all lint simulate bench \
	readme-examples clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade --quiet pip
	# torch first, pinned: a loose requirement would pull a multi-GB CUDA build
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

# The suite in TEST_WORKERS processes (pytest-xdist, one test file per process at a time), without the
# tests marked slow (each has a faster test of the same behaviour); test-all runs every test. Both end
# with the 20 slowest tests, where CI's time goes. Each worker runs one OpenMP thread (torch, astroscrappy):
# two workers of two spin-waiting OpenMP threads each on two cores ran astroscrappy 4x slower.
TEST_WORKERS ?= 2
PYTEST := OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=20

test: install
	$(PYTEST) -m "not slow"

test-all: install
	$(PYTEST)

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

train: install
	$(BIN)/lenscnn-train experiment=quickstart

# Four survey members (seeds 1-4) fine-tuned from one trunk, trained once; then each member and their
# ensemble scored on the same fixed test set (clean realistic lenses), averaged over the image's 8
# symmetries, with the ensemble calibrated on the validation set (outputs/ensemble/survey/eval).
ENSEMBLE := outputs/ensemble/survey
# The sigma calibration (a power law per target) is fitted on the clean realistic validation lenses: the
# lenses of every accuracy and robustness row of the model card (its intervals hold on the survey set too).
CALIBRATION_SET := prior=realistic observation=none

ensemble: $(ENSEMBLE)/.trained
	$(BIN)/lenscnn-eval ensemble=survey compare_members=true calibrate=true symmetries=8 $(CALIBRATION_SET) \
		hydra.run.dir=$(ENSEMBLE)/eval

$(ENSEMBLE)/.trained: $(ENSEMBLE)/trunk/.trained
	$(BIN)/lenscnn-train -m experiment=survey_ensemble
	touch $@

# The members' shared trunk, one long run in two legs, as a run is extended when more time comes: 30
# epochs (~80 minutes on 2 cores), then resumed to 50 (~60 minutes). The resumed schedule re-stretches
# over the new total, so the second leg restarts warm at 35% of the peak learning rate.
TRUNK_EPOCHS := 50
$(ENSEMBLE)/trunk/.trained: | $(STAMP)
	$(BIN)/lenscnn-train experiment=survey_trunk
	$(BIN)/lenscnn-train experiment=survey_trunk ckpt_path=$(ENSEMBLE)/trunk trainer.max_epochs=$(TRUNK_EPOCHS)
	touch $@

# The space ensemble (experiment=space: HST, JWST and Euclid on one 8" grid of 0.1", theta_E 0.3-3"): a
# trunk under a 180-minute wall-time budget (resumable: an interrupted run goes on from its last.ckpt with
# the time it has left), four members fine-tuned from it (~5 minutes each), then calibrated and scored on
# the space validation set (4 hours of 2-core CPU in all).
SPACE_ENSEMBLE := outputs/ensemble/space
space-ensemble: $(SPACE_ENSEMBLE)/.trained
	$(BIN)/lenscnn-eval ensemble=space compare_members=true calibrate=true symmetries=8 \
		hydra.run.dir=$(SPACE_ENSEMBLE)/eval

# $(call trunk_and_members,ensemble dir,recipe,command prefix): experiment=<recipe>_trunk, resumed from its
# last.ckpt if one is there, then the members of experiment=<recipe>_ensemble
define trunk_and_members
	if [ -f $(1)/trunk/checkpoints/last.ckpt ]; then \
		$(3) $(BIN)/lenscnn-train experiment=$(2)_trunk ckpt_path=$(1)/trunk; \
	else \
		$(3) $(BIN)/lenscnn-train experiment=$(2)_trunk; \
	fi
	$(3) $(BIN)/lenscnn-train -m experiment=$(2)_ensemble
	touch $@
endef

$(SPACE_ENSEMBLE)/.trained: | $(STAMP)
	$(call trunk_and_members,$(SPACE_ENSEMBLE),space,)

# The Euclid colour ensemble (experiment=euclid: VIS + NISP Y, J, H on 6.4" of 0.1", the survey prior's lenses
# with the colours of conf/colours/survey_euclid): a trunk under a 75-minute budget on one CPU thread
# (resumable as the space trunk), four members fine-tuned from it (~1 minute each), then calibrated and scored on
# its own validation and test sets (~1.4 hours of one CPU thread in all).
EUCLID_ENSEMBLE := outputs/ensemble/euclid
euclid-ensemble: $(EUCLID_ENSEMBLE)/.trained
	$(BIN)/lenscnn-eval ensemble=euclid compare_members=true calibrate=true symmetries=8 \
		hydra.run.dir=$(EUCLID_ENSEMBLE)/eval

$(EUCLID_ENSEMBLE)/.trained: | $(STAMP)
	$(call trunk_and_members,$(EUCLID_ENSEMBLE),euclid,OMP_NUM_THREADS=1)

# The pretrained ensembles shipped in the package (src/lenscnn/pretrained/<name>) and the metrics of their
# model cards: the four members above exported weights-only in float16, calibrated with test-time averaging
# over the 8 symmetries, scored on the fixed test sets (what `lenscnn-eval ensemble=<config> [prior=...
# observation=...]` reproduces): the training distribution, the clean realistic mixture, held-out galaxies
# with lens light, Sersic sources with lens light and the quickstart Sersic set without lens light; the
# space model's instrument table (its training lenses through HST, JWST short- and long-wavelength and Euclid
# PSFs: observation=space_<instrument>); then the robustness table: the clean realistic lenses with one
# nuisance each (observation=... or prior=realistic_neighbour). Training is deterministic, so this rebuilds
# the shipped files bit for bit (same torch, same CPU).
#   make pretrained            the survey ensemble (the default: ensemble=pretrained), calibrated on CALIBRATION_SET
#   make pretrained-space      the space ensemble (ensemble=pretrained_space), calibrated as trained
#   make pretrained-euclid     the Euclid colour ensemble (ensemble=pretrained_euclid), calibrated as trained
PRETRAINED := src/lenscnn/pretrained
CARD_SETS := realistic realistic_galaxies realistic_sersic quickstart
NUISANCES := pedestal_plus pedestal_minus moffat_narrow moffat_wide noise_x3 cosmic_rays
INSTRUMENTS := space_hst space_jwst_sw space_jwst_lw space_euclid
COMMA := ,
SPACE := $(subst ,, )
list = [$(subst $(SPACE),$(COMMA),$(strip $(1)))]

# $(call shipped,name,training ensemble config,shipped ensemble config,eval dir,calibration set,instruments)
define shipped
	$(BIN)/lenscnn-export ensemble=$(2) out_dir=$(PRETRAINED)/$(1) dtype=float16 hydra.run.dir=$(4)/export
	$(BIN)/lenscnn-eval ensemble=$(3) calibrate=true symmetries=8 $(5) hydra.run.dir=$(4)/calibrate
	$(BIN)/lenscnn-eval ensemble=$(3) compare_members=true hydra.run.dir=$(4)/eval
	for set in $(CARD_SETS); do \
		$(BIN)/lenscnn-eval ensemble=$(3) prior=$$set observation=none hydra.run.dir=$(4)/eval_$$set || exit 1; \
	done
	for observation in $(6); do \
		$(BIN)/lenscnn-eval ensemble=$(3) observation=$$observation hydra.run.dir=$(4)/instrument_$$observation \
			|| exit 1; \
	done
	for nuisance in $(NUISANCES); do \
		$(BIN)/lenscnn-eval ensemble=$(3) prior=realistic observation=$$nuisance \
			hydra.run.dir=$(4)/robust_$$nuisance || exit 1; \
	done
	$(BIN)/lenscnn-eval ensemble=$(3) prior=realistic_neighbour observation=none \
		hydra.run.dir=$(4)/robust_neighbour
	$(BIN)/lenscnn-export card=$(PRETRAINED)/$(1)/MODEL_CARD.md \
		metrics=$(call list,$(4)/eval/metrics.json $(CARD_SETS:%=$(4)/eval_%/metrics.json)) \
		$(if $(6),instruments=$(call list,$(6:%=$(4)/instrument_%/metrics.json))) \
		robustness=$(call list,$(4)/eval_realistic/metrics.json $(NUISANCES:%=$(4)/robust_%/metrics.json) \
			$(4)/robust_neighbour/metrics.json) \
		hydra.run.dir=$(4)/card
endef

pretrained: install $(ENSEMBLE)/.trained
	$(call shipped,survey,survey,pretrained,$(ENSEMBLE)/pretrained,$(CALIBRATION_SET),)

pretrained-space: install $(SPACE_ENSEMBLE)/.trained
	$(call shipped,space,space,pretrained_space,$(SPACE_ENSEMBLE)/pretrained,,$(INSTRUMENTS))

# The Euclid colour ensemble's card holds its own test set only: the other test sets and the robustness rows
# draw single-band observations (observation=...), which a multi-band instrument does not take.
pretrained-euclid: install $(EUCLID_ENSEMBLE)/.trained
	$(BIN)/lenscnn-export ensemble=euclid out_dir=$(PRETRAINED)/euclid dtype=float16 \
		hydra.run.dir=$(EUCLID_ENSEMBLE)/pretrained/export
	$(BIN)/lenscnn-eval ensemble=pretrained_euclid calibrate=true symmetries=8 \
		hydra.run.dir=$(EUCLID_ENSEMBLE)/pretrained/calibrate
	$(BIN)/lenscnn-eval ensemble=pretrained_euclid compare_members=true hydra.run.dir=$(EUCLID_ENSEMBLE)/pretrained/eval
	$(BIN)/lenscnn-export card=$(PRETRAINED)/euclid/MODEL_CARD.md metrics=$(EUCLID_ENSEMBLE)/pretrained/eval/metrics.json \
		hydra.run.dir=$(EUCLID_ENSEMBLE)/pretrained/card

simulate: install
	$(BIN)/lenscnn-simulate n=64 preview=16

bench: install
	$(BIN)/python benchmarks/sim_throughput.py
	$(BIN)/python benchmarks/train_throughput.py
	$(BIN)/python benchmarks/predict_throughput.py
	$(BIN)/python benchmarks/domain_flags.py
	$(BIN)/python benchmarks/heldout_sources.py

# Every command line of README.md's shell blocks, run as written in a scratch directory laid out as a clone
# (tests/readme_examples.py: placeholders filled with fixtures it makes, overrides appended that shrink each to
# seconds; what cannot run here, GPUs, SLURM, make test and the multi-hour recipes, is listed as skipped with
# why). ~10 minutes on 2 cores; exits non-zero if any command failed. READMEFLAGS=--list: the plan alone.
readme-examples: install
	OMP_NUM_THREADS=1 $(BIN)/python -m tests.readme_examples $(READMEFLAGS)

clean:
	rm -rf $(VENV) build dist src/*.egg-info
