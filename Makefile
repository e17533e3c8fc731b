# meterctl — the two commands a newcomer needs are `make demo` and `make test`.
# Each target creates .venv with python3 -m venv when it is missing and installs the
# project with its extras, so a fresh clone needs nothing else first.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: demo test bench lint format clean venv i18n

# Translations: the .po catalogs are in git, the .mo files are built from them here (and
# compiled in memory at run time when missing or older, see base/i18n.py).
LOCALE := base/locale
PO := $(wildcard $(LOCALE)/*/LC_MESSAGES/meterctl.po)
MO := $(PO:.po=.mo)

venv: $(STAMP) $(MO)

$(LOCALE)/%/LC_MESSAGES/meterctl.mo: $(LOCALE)/%/LC_MESSAGES/meterctl.po $(STAMP)
	@$(VENV)/bin/pybabel compile --statistics -D meterctl -d $(LOCALE) -l $* >/dev/null

# After wrapping new strings in _(): extract them, merge them into the catalogs (translate
# the new entries in the .po, tests/engine/test_i18n.py fails until you do), compile.
i18n: $(STAMP)
	$(VENV)/bin/pybabel extract -F babel.cfg -k _ -k N_ -k ngettext:1,2 --no-location \
		--sort-output --project meterctl -o $(LOCALE)/meterctl.pot .
	$(VENV)/bin/pybabel update -D meterctl -i $(LOCALE)/meterctl.pot -d $(LOCALE) \
		--no-fuzzy-matching --ignore-obsolete
	$(VENV)/bin/pybabel compile --statistics -D meterctl -d $(LOCALE)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --upgrade pip
	@$(PY) -m pip install --quiet -e '.[dev,bench]'
	@touch $(STAMP)

demo: $(STAMP) $(MO)
	$(VENV)/bin/meterctl demo

lint: $(STAMP) $(MO)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# pytest exits 5 when it collected no test: an empty suite must fail loudly, not pass.
test: lint
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests: failing" >&2; exit 1; fi; \
	exit $$rc

bench: $(STAMP) $(MO)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
