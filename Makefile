# Two commands: `make run` and `make test`. Each sets up .venv first if needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint system clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# Start chatd as a daemon on the default port (unless one already answers), then
# open the desktop client if there is a display; the server keeps running.
run: $(STAMP)
	@if $(BIN)/chatd status >/dev/null 2>&1; then \
		echo "chatd already runs (see: $(BIN)/chatd status)"; \
	else \
		$(BIN)/chatd start || exit 1; \
	fi
	@echo "web client: https://127.0.0.1:8080/ (the server's own certificate; its fingerprint: $(BIN)/chatd status)"
	@echo "stop it with: $(BIN)/chatd stop"
	@if [ -n "$$DISPLAY" ] && $(BIN)/python -c 'import chatgui.app' 2>/dev/null; then \
		echo "opening chatgui..."; $(BIN)/chatgui; \
	else \
		echo "connect with: $(BIN)/chat --name NAME  (or $(BIN)/chatgui on a desktop)"; \
	fi

# Debian packages the tests need (Xvfb, xdotool, tmux, fonts...), when missing.
system:
	@bash scripts/system-packages

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

test: system lint
	$(BIN)/pytest

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
