# modelzip: make demo | make test | make bench | make lint
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.modelzip-installed
EXTRAS ?= dev,hf,distributed

.PHONY: demo test bench lint venv clean

$(PY):
	python3 -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/modelzip demo $(ARGS)

test: $(STAMP)
	$(PY) -m pytest $(ARGS)

bench: $(STAMP)
	$(PY) benchmarks/run_all.py $(ARGS)

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info
