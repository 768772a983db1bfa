# Developer shortcuts. Build switches themselves live in setup.py.
PYTHON ?= python3
ASAN_PYTHON ?= 3.13
FUZZ_SECONDS ?= 600
SOAK_SECONDS ?= 600
# `make tsan` runs the whole suite's compiled variants (the stdlib's and the pure
# copy's run no C of ours): every test that starts a thread is a threaded test here.
# Skipped there (tests/support.py): threads in a child fork()ed from a threaded
# process (TSan cannot follow), races a test makes on purpose, times as a subject.
TSAN_TESTS ?= tests

.PHONY: build annotate debug asan tsan portable test test-all lint fuzz soak bench info docs clean

build:            ## editable install with the compiled core required
	FASTSOCKSERVER_REQUIRE_EXTENSIONS=1 $(PYTHON) -m pip install -e ".[test]"

annotate:         ## also write build/cython/src/_core.html (yellow = Python calls)
	FASTSOCKSERVER_REQUIRE_EXTENSIONS=1 FASTSOCKSERVER_CYTHON_ANNOTATE=1 $(PYTHON) -m pip install -e .
	@ls build/cython/src/*.html

debug:            ## line-traced, unoptimised core (coverage, profilers)
	FASTSOCKSERVER_REQUIRE_EXTENSIONS=1 FASTSOCKSERVER_CYTHON_TRACE=1 $(PYTHON) -m pip install -e ".[test]"

asan:             ## the whole suite on a core built with AddressSanitizer + UBSan; any report fails
	$(PYTHON) tools/run_tests.py --pythons $(ASAN_PYTHON) --only asan
tsan:             ## the suite on a TSan-built core and free-threaded CPython 3.13 (TSan too); any report fails
	$(PYTHON) tools/run_tests.py --pythons 3.13t --only tsan $(TSAN_TESTS)
portable:         ## the core as macOS/BSD build it (poll, accept + fcntl, no MSG_NOSIGNAL), on Linux
	FASTSOCKSERVER_REQUIRE_EXTENSIONS=1 FASTSOCKSERVER_PORTABLE_CORE=1 $(PYTHON) -m pip install -e ".[test]"

test:             ## this interpreter, as installed by `make build`: stdlib, pure and compiled
	$(PYTHON) -m pytest

test-all:         ## the full test command (.ci/run, the GitHub workflow): every Python
	$(PYTHON) tools/run_tests.py

lint:             ## the habits alone (they run with the tests too): ruff, cython-lint, stubtest
	$(PYTHON) -m pytest tests/test_sourcecode.py

fuzz:             ## each fuzz target (tests/fuzz/) FUZZ_SECONDS under atheris: pip install -e ".[fuzz]"
	$(PYTHON) tests/fuzz/run.py --seconds $(FUZZ_SECONDS)

soak:             ## before a release: bench --soak SOAK_SECONDS (mixed load, faults, a verdict)
	$(PYTHON) -m fastsockserver bench --soak $(SOAK_SECONDS) --json soak.json

bench:
	$(PYTHON) -m fastsockserver bench

info:             ## version, Python, compiled or pure and why, the wait, the load generator
	$(PYTHON) -m fastsockserver info

clean:
	rm -rf build dist .venvs src/*.egg-info src/fastsockserver/*.so

docs:             ## the documentation, strict (warnings are errors): pip install -e ".[docs]"
	$(PYTHON) -m sphinx -W --keep-going -n -b html docs docs/_build/html
