# make train   create .venv, install segtrain, train the default run (embedded shapes, CPU)
# make test    the test suite (what .ci/run calls)
# make test-fast  the edit-test loop (under 5 minutes on 2 cores): everything but the tests marked slow
#                 (end-to-end runs of 7 s and more, and the SLURM cluster)
# make bench   training-step overhead against a plain PyTorch loop
VENV ?= .venv
PYTHON ?= python3
# torch and torchvision are installed first so the resolver does not pick another build.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
ARGS ?=
BIN := $(VENV)/bin
OFFLINE := HF_HUB_OFFLINE=1 WANDB_MODE=offline NO_ALBUMENTATIONS_UPDATE=1

.PHONY: install train test test-fast bench clean

$(BIN)/segtrain: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

install: $(BIN)/segtrain

train: install
	$(OFFLINE) $(BIN)/segtrain $(ARGS)

test: install
	$(OFFLINE) $(BIN)/python -m pytest -n 2 --dist loadfile --timeout 900 $(ARGS)

test-fast: install
	$(OFFLINE) $(BIN)/python -m pytest -n 2 --dist loadfile --timeout 900 -m "not slow" $(ARGS)

bench: install
	$(OFFLINE) $(BIN)/segtrain bench $(ARGS)

clean:
	rm -rf $(VENV) outputs dist build *.egg-info
