# make demo / make test on a fresh Debian 12 machine, as root. Both run `setup` first.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

PREFIX ?= /usr/local

.PHONY: setup host demo test unit integration bench lint clean install

# Byte-compiled once here: this package is installed editable, and with
# PYTHONDONTWRITEBYTECODE set Python would otherwise compile it at every start.
setup: host $(STAMP)
	@$(PY) -m compileall -q xdpfwd

host:
	@./scripts/setup-host.sh

# The venv must see Debian's bcc module, which belongs to /usr/bin/python3.
$(VENV)/bin/python:
	/usr/bin/python3 -m venv --system-site-packages $(VENV)

$(STAMP): $(VENV)/bin/python setup.cfg pyproject.toml
	@echo "setup: installing xdpfwd into $(VENV) (editable, with test tools)"
	@$(PY) -m pip install -e '.[test]' > $(VENV)/pip.log 2>&1 || { cat $(VENV)/pip.log; exit 1; }
	@touch $@

demo: setup
	$(VENV)/bin/xdpfwd demo

test: setup
	$(PY) -m pytest

unit: $(STAMP)
	$(PY) -m pytest tests/unit

integration: setup
	$(PY) -m pytest tests/integration

# One run with one and with two generator CPUs, and a profile of the rows that show
# where forwarding's time goes, written up as docs/BENCHMARKS.md.
PROFILED := --row forward --row forward_no_loss_accounting --row baseline_empty_tracepoint \
	--row broadcast_4
bench: setup
	$(VENV)/bin/xdpfwd bench --json --repeat 9 --duration 2 --cpus 1 > $(VENV)/bench-1cpu.json
	$(VENV)/bin/xdpfwd bench --json --repeat 9 --duration 2 --cpus 2 > $(VENV)/bench-2cpu.json
	$(VENV)/bin/xdpfwd bench --json --repeat 3 --duration 2 --cpus 1 --profile $(PROFILED) > $(VENV)/bench-profile.json
	$(PY) scripts/bench-report.py $(VENV)/bench-1cpu.json $(VENV)/bench-2cpu.json $(VENV)/bench-profile.json > docs/BENCHMARKS.md

lint: $(STAMP)
	$(VENV)/bin/ruff check xdpfwd tests scripts
	$(VENV)/bin/ruff format --check xdpfwd tests scripts

# As a system tool: PREFIX/bin/xdpfwd, its man page, completions and systemd unit.
install: host
	@./scripts/install.sh "$(PREFIX)"

clean:
	rm -rf $(VENV) build dist *.egg-info
