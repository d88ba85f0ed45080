# `make demo` audits the bundled captures into reports/; `make test` runs the tests.
# Both create their own virtualenv in .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The lab's key tables (strongSwan save-keys), so the example report shows verified classes.
KEYS := $(addprefix --keys ,$(sort $(wildcard pcaps/*.keys)))

# A fresh Debian or Ubuntu lacks two packages: one line says which, rather than a failure
# deep inside (python3-venv: `python3 -m venv` stops without ensurepip; libpcap0.8: the
# fast path and `live`). HAS_LIBPCAP=false shows the message.
VENV_MISSING := error: '$(PYTHON) -m venv' failed: on Debian/Ubuntu install python3-venv (apt-get install python3-venv)
LIBPCAP_MISSING := libpcap is missing: on Debian/Ubuntu install libpcap0.8 (apt-get install libpcap0.8)
HAS_LIBPCAP ?= $(BIN)/python -c 'from ikeaudit.sources import libpcap_version as v; raise SystemExit(v() is None)'

.PHONY: demo test clean

$(BIN)/ikeaudit: pyproject.toml
	@$(PYTHON) -m venv $(VENV) >/dev/null 2>&1 || { rm -rf $(VENV); echo "$(VENV_MISSING)" >&2; exit 1; }
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,cluster]'
	touch $@

demo: $(BIN)/ikeaudit
	@$(HAS_LIBPCAP) || echo "warning: $(LIBPCAP_MISSING); meanwhile every frame is read in Python" >&2
	mkdir -p reports
	$(BIN)/ikeaudit report $(KEYS) pcaps/ -o reports/
	$(BIN)/ikeaudit scan $(KEYS) pcaps/ --format table > reports/scan.txt
	$(BIN)/ikeaudit scan $(KEYS) pcaps/ --format json > reports/scan.json
	$(BIN)/ikeaudit scan $(KEYS) pcaps/ --format csv > reports/scan.csv
	$(BIN)/ikeaudit mtu $(KEYS) pcaps/ --plot reports/mtu-message-sizes > reports/mtu.txt
	@tail -n 1 reports/scan.txt
	@echo "wrote reports/: report.html report.md report.json cbom.json tables, plots, scan.* and mtu.txt"

test: $(BIN)/ikeaudit
	@$(HAS_LIBPCAP) || { echo "error: $(LIBPCAP_MISSING)" >&2; exit 1; }
	$(BIN)/pytest -q

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
