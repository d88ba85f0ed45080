# `make demo` audits the bundled captures into reports/; `make test` runs the tests.
# Both create their own virtualenv in .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The lab's key tables (strongSwan save-keys), so the example report shows verified classes.
KEYS := $(addprefix --keys ,$(sort $(wildcard pcaps/*.keys)))

.PHONY: demo test clean

$(BIN)/ikeaudit: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

demo: $(BIN)/ikeaudit
	mkdir -p reports
	$(BIN)/ikeaudit report $(KEYS) pcaps/ -o reports/
	$(BIN)/ikeaudit scan $(KEYS) pcaps/ --format table > reports/scan.txt
	$(BIN)/ikeaudit scan $(KEYS) pcaps/ --format json > reports/scan.json
	$(BIN)/ikeaudit scan $(KEYS) pcaps/ --format csv > reports/scan.csv
	$(BIN)/ikeaudit mtu $(KEYS) pcaps/ --plot reports/mtu-message-sizes > reports/mtu.txt
	@tail -n 1 reports/scan.txt
	@echo "wrote reports/: report.html report.md report.json cbom.json tables, plots, scan.* and mtu.txt"

test: $(BIN)/ikeaudit
	$(BIN)/pytest -q

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
