# ntk-backdoor: the two commands of the README, plus helpers.
#   make figures   create .venv if missing, install, run every notebook (papermill), JOBS=2 at a time
#   make test      create/install the same way, run the whole test suite
#   make test-current  the same tests in a second environment, .venv-current: a current JAX with
#                  NumPy 2 and no neural-tangents (requirements-current-jax.txt); tests that need
#                  neural-tangents are reported as skipped
# Python 3.11 or 3.12 is needed (jaxlib 0.4.25 has no wheels for 3.13).
PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
VENV_CURRENT ?= .venv-current
STAMP_CURRENT := $(VENV_CURRENT)/.installed-stamp
PARAMS ?=
NOTEBOOKS ?=
JOBS ?= 2
export TF_CPP_MIN_LOG_LEVEL ?= 2
export TF_ENABLE_ONEDNN_OPTS ?= 0

.PHONY: install test test-current lint figures book assignments notebooks bench bench-quick clean cifar-pair mutation

# $(call pip_install,VENV,ARGS): pip's arguments ARGS installed into VENV by uv (from PyPI, into the venv
# itself: about 40 s for the pinned stack from an empty cache, 27 s warm, where pip took 73 s), with the
# bytecode compiled as pip would; pip does it where uv cannot (no PyPI, only a pip mirror) or with
# INSTALLER=pip. Both resolve the same versions (pyproject.toml pins the stack exactly).
INSTALLER ?= uv
define pip_install
	$(1)/bin/python -m pip install -q --upgrade pip $(if $(filter uv,$(INSTALLER)),uv)
	$(if $(filter uv,$(INSTALLER)),$(1)/bin/uv pip install -q --python $(1)/bin/python --compile-bytecode $(2) \
	    || { echo "uv could not install; pip instead"; $(1)/bin/python -m pip install -q $(2); }, \
	    $(1)/bin/python -m pip install -q $(2))
endef

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; v=sys.version_info[:2]; sys.exit(0 if (3,11)<=v<=(3,12) else "ntk-backdoor needs Python 3.11 or 3.12 (jaxlib 0.4.25 wheels); found %d.%d. Set PYTHON=/path/to/python3.11" % v)'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(call pip_install,$(VENV),-e ".[dev]")
	@touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q --durations=15

$(STAMP_CURRENT): requirements-current-jax.txt pyproject.toml
	@test -x $(VENV_CURRENT)/bin/python || $(PYTHON) -m venv $(VENV_CURRENT)
	$(call pip_install,$(VENV_CURRENT),-r requirements-current-jax.txt)
	$(call pip_install,$(VENV_CURRENT),--no-deps -e .)
	@touch $(STAMP_CURRENT)

# notebooks and assignments need jupyter, papermill and nbgrader (make test runs them)
test-current: $(STAMP_CURRENT)
	$(VENV_CURRENT)/bin/python -m pytest -q -rs --durations=15 --ignore=tests/test_notebooks.py --ignore=tests/test_assignments.py

lint: $(STAMP)  # what CI checks before the tests (pre-commit runs the same before each commit)
	$(PY) -m ruff check .
	$(PY) -m ntklib.runner --check-pairs

figures: $(STAMP)
	$(PY) -m ntklib.runner --jobs $(JOBS) $(if $(PARAMS),--params $(PARAMS)) $(NOTEBOOKS) \
	    $(if $(PARAMS)$(NOTEBOOKS),,--timings 'bench/results/figures_{platform}.json')

book: $(STAMP)  # the documentation site (Sphinx): notebooks as `make figures` left them, docs, API; build/book/index.html
	$(PY) -m ntklib.book

assignments: $(STAMP)  # student versions of the course assignments (nbgrader) into assignments/release/
	$(PY) assignments/course.py release

cifar-pair: $(STAMP)  # CIFAR-10 truck and deer (both splits) as data/cifar-10-subset.npz + .json, to carry to a GPU
	$(PY) -m ntklib.data subset --classes 9 4

notebooks: $(STAMP)  # the parameters cells from ntklib/params.py, then each .py and .ipynb pair in sync
	$(PY) -m ntklib.params --write
	$(PY) -m jupytext --sync notebooks/*.py assignments/source/*/*.py

bench: $(STAMP)
	$(PY) bench/kernels.py
	$(PY) bench/greedy.py
	$(PY) bench/scale.py
	$(PY) bench/train.py
	$(PY) bench/validation.py
	$(PY) bench/adversarial.py
	$(PY) bench/defenses.py
	$(PY) bench/reconstruction.py
	$(PY) bench/ibau.py
	$(PY) bench/cost.py
	$(PY) bench/report.py

bench-quick: $(STAMP)
	$(PY) bench/kernels.py --quick
	$(PY) bench/greedy.py --quick
	$(PY) bench/scale.py --quick
	$(PY) bench/train.py --quick
	$(PY) bench/validation.py --quick
	$(PY) bench/adversarial.py --quick
	$(PY) bench/defenses.py --quick
	$(PY) bench/reconstruction.py --quick
	$(PY) bench/ibau.py --quick
	$(PY) bench/cost.py --quick

mutation: $(STAMP)  # mutants of the numerical modules the tests miss: bench/results/mutation.md (not CI: hours)
	$(PY) -m pip install -q mutmut==3.8.1
	$(PY) bench/listed_mutants.py
	$(PY) bench/mutation.py

clean:  # build/ holds the executed notebooks and ntklib's cache (build/cache: victims, poisons)
	rm -rf build .pytest_cache
