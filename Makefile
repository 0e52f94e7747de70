# The two commands of the README: `make demo` and `make test` (`make typecheck`, then pytest).
# Both create .venv when it is missing and install the project into it (the dev extra).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= out

.PHONY: demo test typecheck install clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and \
		"mtcnn-jax needs Python >= 3.11 (JAX >= 0.7 does); this is " + sys.version.split()[0] + \
		": run make PYTHON=python3.11 (or newer)")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	# The ONNX converter for the export tests, without its dependency pins (it pins
	# orbax-checkpoint < 0.11.37, which the training stack is newer than; see pyproject's onnx extra).
	$(BIN)/python -m pip install -q --no-deps "jax2onnx==0.17.1"
	touch $@

install: $(BIN)/.installed

demo: $(BIN)/.installed
	mkdir -p $(OUT)
	$(BIN)/mtcnn-jax detect mtcnn_jax/assets/astronaut.jpg --json $(OUT)/demo.json --annotate $(OUT) --overwrite

test: typecheck
	$(BIN)/python -m pytest -q

# mypy on the public API (the files and settings are in pyproject.toml, [tool.mypy]).
typecheck: $(BIN)/.installed
	$(BIN)/python -m mypy

clean:
	rm -rf $(VENV) $(OUT)
