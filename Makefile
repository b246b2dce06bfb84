# emergence-lab: `make sweep` and `make test` are the whole set-up; each creates .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TRACKING_URI ?= sqlite:///mlruns/mlflow.db
EXPERIMENT ?= paper_fmnist
HOST ?= 127.0.0.1
PORT ?= 5000
PGDATA ?= /tmp/emergence-lab-postgres
PGPORT ?= 5432
AUTH ?= auto

.PHONY: help venv smoke sweep report ui server server-stop test test-fast bench lint docs docs-build data clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --no-compile -e ".[dev]"
	@# the packages' bytecode on every core (pip compiles on one: 35 s of the 95), test folders left out
	$(PY) -c "import compileall, re, sysconfig; compileall.compile_dir(sysconfig.get_paths()['purelib'], \
		quiet=2, workers=0, rx=re.compile(r'/tests?/'))"
	touch $(STAMP)

venv: $(STAMP)  ## create .venv with the pinned stack (torch 2.14.1, torchvision 0.29.1)

data:  ## install Debian's dataset-fashion-mnist when it is missing and apt-get can run
	@if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) \
		|| echo "apt-get could not install dataset-fashion-mnist; the loader will try a download"; \
	fi

smoke: $(STAMP)  ## one minute: a tiny real sweep on the bundled digits data (experiment=smoke), then its verdicts
	$(PY) scripts/train.py -m experiment=smoke tracking.uri=$(TRACKING_URI) $(ARGS)
	$(PY) scripts/report.py --tracking-uri $(TRACKING_URI) $(REPORT_ARGS)

sweep: $(STAMP) data  ## the paper's Fashion-MNIST sweep on 5 seeds (SEEDS=0 for one; EXPERIMENT=paper_mnist), then its report
	$(PY) scripts/train.py -m experiment=$(EXPERIMENT) tracking.uri=$(TRACKING_URI) $(if $(SEEDS),trainer.seed=$(SEEDS)) $(ARGS)
	$(MAKE) --no-print-directory report

report: $(STAMP)  ## report of the latest sweep: reports/<sweep>/report.{md,html}, summary.csv, PNGs
	$(PY) scripts/report.py --tracking-uri $(TRACKING_URI) $(REPORT_ARGS)

ui: $(STAMP)  ## browse the runs: prints the latest sweep's URLs, then the MLflow UI on http://127.0.0.1:5000
	$(PY) scripts/ui.py --tracking-uri $(TRACKING_URI) --host $(HOST) --port $(PORT) --auth $(AUTH)

server: $(STAMP)  ## shared tracking server: mlflow server on a local PostgreSQL (PGDATA, PGPORT); off loopback, MLflow's basic-auth (AUTH=on|off|auto)
	$(PY) scripts/server.py --host $(HOST) --port $(PORT) --auth $(AUTH) --pgdata $(PGDATA) --pgport $(PGPORT)

server-stop:  ## stop the PostgreSQL that make server started
	scripts/postgres.sh stop $(PGDATA)

TEST_JOBS ?= 2  # pytest-xdist workers (test files spread over them)

# our own bytecode, written once for the suite's hundreds of processes (where the environment
# sets PYTHONDONTWRITEBYTECODE, each compiled every module again: 0.2 s of CPU a command line)
BYTECODE = $(PY) -m compileall -q -j 0 src scripts tests >/dev/null

test: $(STAMP)  ## the whole test suite (fast and slow), offline; prints the 15 slowest tests
	@$(BYTECODE)
	$(PY) -m pytest -q -rs -n $(TEST_JOBS) --dist loadfile -m "not timing" --durations=15
	$(PY) -m pytest -q -m timing  # wall-clock bounds, measured with the machine to themselves

test-fast: $(STAMP)  ## the fast tests only
	@$(BYTECODE)
	$(PY) -m pytest -q -n $(TEST_JOBS) --dist loadfile -m "not slow"

bench: $(STAMP) data  ## performance ratios (epoch overhead, emergence share, shared sweep, report), to benchmarks/results/bench.json
	$(PY) benchmarks/bench.py $(BENCH_ARGS)
	$(PY) -m pytest -q -s tests/test_report_scale.py  # the report over 2,000 runs: seconds per 1,000 runs

docs: $(STAMP)  ## the documentation site on http://127.0.0.1:8000 (mkdocs-material, docs/)
	$(VENV)/bin/mkdocs serve

docs-build: $(STAMP)  ## the documentation site as files, in site/ (strict: a broken link fails)
	$(VENV)/bin/mkdocs build --strict

lint: $(STAMP)  ## ruff
	$(VENV)/bin/ruff check src scripts tests benchmarks

clean:  ## remove Hydra outputs (keeps the MLflow store and .venv)
	rm -rf outputs multirun
