# Developer shortcuts. Build switches themselves live in setup.py.
PYTHON ?= python3

.PHONY: build annotate debug test test-all bench clean

build:            ## editable install with the compiled core required
	FASTSOCKSERVER_REQUIRE_EXTENSIONS=1 $(PYTHON) -m pip install -e ".[test]"

annotate:         ## also write build/cython/src/_core.html (yellow = Python calls)
	FASTSOCKSERVER_REQUIRE_EXTENSIONS=1 FASTSOCKSERVER_CYTHON_ANNOTATE=1 $(PYTHON) -m pip install -e .
	@ls build/cython/src/*.html

debug:            ## line-traced, unoptimised core (coverage, profilers)
	FASTSOCKSERVER_REQUIRE_EXTENSIONS=1 FASTSOCKSERVER_CYTHON_TRACE=1 $(PYTHON) -m pip install -e ".[test]"

test:             ## this interpreter: stdlib, pure and compiled side by side
	$(PYTHON) -m pytest

test-all:         ## every Python 3.9-3.13 on the machine (what CI runs)
	$(PYTHON) tools/run_tests.py

bench:
	$(PYTHON) -m fastsockserver bench

clean:
	rm -rf build dist .venvs src/*.egg-info src/fastsockserver/*.so
