# `make help` lists the targets. Everything runs from a virtual environment in .venv that the
# targets create and keep up to date with pyproject.toml.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.installed-local

.DEFAULT_GOAL := help
.PHONY: help venv test pytest test-slow soak lint fmt demo bench bench-loop clean _install-local

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

# One stamp per set of extras: `.installed` for the test extras (which include `local`),
# `.installed-local` for what the demo needs (runtime + the embedded broker and PostgreSQL + OpenVINO,
# whose INT8 export the demo's worker runs when it agrees with Keras: MODEL_RUNTIME=auto).
DEMO_EXTRAS := local,openvino
# Quiet (pip -qq: errors only) so that the demo's first screen is the product's; `make ... PIP_VERBOSITY=`
# shows pip's usual output.
PIP_VERBOSITY ?= -qq
define install_venv
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install $(PIP_VERBOSITY) --upgrade pip
	@$(BIN)/pip install $(PIP_VERBOSITY) -e '.[$(1)]'
endef

$(STAMP): pyproject.toml
	@echo "installing steel-worker[test] into $(VENV) (TensorFlow: a few minutes the first time)"
	$(call install_venv,test)
	@touch $(STAMP)

$(DEMO_STAMP): pyproject.toml
	@if [ $(STAMP) -nt pyproject.toml ]; then echo "$(VENV) already has the test extras (they include local)"; \
	else echo "installing steel-worker[$(DEMO_EXTRAS)] into $(VENV) (TensorFlow: a few minutes the first time)"; \
	$(MAKE) --no-print-directory _install-local; fi
	@touch $(DEMO_STAMP)

_install-local:
	$(call install_venv,$(DEMO_EXTRAS))

venv: $(STAMP) ## create .venv and install the project with its test extras

# What CI checks (.ci/run): lint, format, types, then the default test suite.
CODE := worker tests bench scripts migrations

test: lint pytest ## lint, format and type checks, then the default test suite (real broker, PostgreSQL, model)

pytest: $(STAMP) ## the default test suite alone (PYTEST_ARGS="-k name -x" to narrow it)
	$(BIN)/python -m pytest -m "not slow and not realdata" $(PYTEST_ARGS)

test-slow: $(STAMP) ## run the slow and real-data checks (set STEEL_DATA_DIR=../shared/data)
	$(BIN)/python -m pytest -m "slow or realdata" $(PYTEST_ARGS)

demo: $(DEMO_STAMP) ## the whole product locally: broker, database, demo model, strips, summary (DEMO_ARGS=...)
	@$(BIN)/steel-worker demo $(DEMO_ARGS)

soak: $(STAMP) ## 30 min of mixed good and bad frames through the worker: 0 lost, 0 twice, memory flat (SOAK_MINUTES=30)
	SOAK_REPORT=$${SOAK_REPORT:-soak-report.json} $(BIN)/python -m pytest -m slow tests/test_soak.py -s $(PYTEST_ARGS)

lint: $(STAMP) ## ruff (lint and format check) and mypy; `make fmt` fixes what it can
	$(BIN)/ruff check $(CODE)
	$(BIN)/ruff format --check $(CODE)
	$(BIN)/mypy worker bench scripts

fmt: $(STAMP) ## format the code and apply ruff's safe fixes
	$(BIN)/ruff format $(CODE)
	$(BIN)/ruff check --fix $(CODE)

bench: $(STAMP) ## runtimes at 256 px: each bare and through the worker, batch sweep, latency (BENCH_ARGS="--input-size 64")
	$(BIN)/python bench/runtimes.py $(BENCH_ARGS)

bench-loop: $(STAMP) ## the worker loop's own cost at 64 px: bare model vs worker, rules on and off (BENCH_ARGS="--repeat 3")
	$(BIN)/python bench/throughput.py $(BENCH_ARGS)

clean: ## remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
