# qimg.disk: set-up, tests and demo. Everything runs from this checkout.
#   make demo    set up, then run the demo playbook (demo/demo.yml)
#   make test    set up, then run every test stage and print "N passed, N failed"
# Single stages: make pytest | sanity | units | integration | lint | molecule | docs

PYTHON ?= python3
VENV   := .venv

.PHONY: all setup demo test pytest sanity units integration lint molecule docs changelog build clean distclean

all: test

# scripts/setup.sh is idempotent; a stamp file in the venv makes a second run fast.
setup:
	@PYTHON=$(PYTHON) scripts/setup.sh

demo: setup
	scripts/demo.sh

test: setup
	scripts/run-tests.sh

pytest sanity units integration molecule docs: setup
	scripts/run-tests.sh $@

lint: setup
	scripts/run-tests.sh lint

changelog: setup
	$(VENV)/bin/antsibull-changelog lint

build: setup
	$(VENV)/bin/ansible-galaxy collection build --force .

clean:
	rm -rf tests/output demo/work .pytest_cache .hypothesis qimg-disk-*.tar.gz
	find . -path ./.venv -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) .ansible
