# Curved Latents: the two commands are `make book` and `make test` (see README.md).
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: gpu-check setup book student singlehtml test browser-check lint unit nbval strict-book browser quick lab clean

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $(STAMP)

## The live explorers' files: onnxruntime-web from npm (package-lock.json), the embedded models
## exported to ONNX, their noise and bases -> book/_static/live/generated (skipped when up to date)
live: setup node_modules/.package-lock.json
	$(BIN)/python scripts/export_onnx.py

node_modules/.package-lock.json: package.json package-lock.json | node-check
	npm ci --no-audit --no-fund --loglevel=error

node-check:
	@command -v node >/dev/null && command -v npm >/dev/null || { echo "make: the web book's live explorers need Node.js and npm to install onnxruntime-web (Debian/Ubuntu: sudo apt-get install -y nodejs npm)" >&2; exit 1; }

## The web book, every notebook executed on the CPU, warnings are errors -> _build/html
book: setup live
	$(BIN)/jupyter-book build . --warningiserror --nitpick --keep-going

## The student edition: same book, exercise solutions removed -> _build/student/_build/html
student: setup live
	$(BIN)/python scripts/build_student_edition.py

## The whole book on one page, solutions included (read it offline, or print it as PDF from a
## browser); reuses the web book's executed notebooks -> _build/single/_build/singlehtml/index.html
singlehtml: setup live
	$(BIN)/python scripts/build_single_page.py

## Everything CI checks: lint, unit tests, nbval over every notebook, the strict build, the browser tests.
## First of all, find or install the browser the browser tests need (or stop at once, saying what to install).
test: browser-check lint unit nbval strict-book browser

browser-check:
	bash scripts/ensure_browser.sh

## Style, checked by ruff (rules in pyproject.toml)
lint: setup
	$(BIN)/ruff check labkit tests scripts benchmarks book/_ext book/conftest.py

unit: setup
	$(BIN)/python -m pytest tests -m "not slow" -q -p no:cacheprovider

nbval: setup
	$(BIN)/python -m pytest --nbval-lax --nbval-current-env --nbval-cell-timeout=900 -p no:cacheprovider book -q

strict-book: book

browser: setup browser-check
	$(BIN)/python -m pytest tests -m slow -q -p no:cacheprovider

## Faster loop while writing: lint and unit tests only
quick: lint unit

## On a machine with a CUDA GPU: local bases at CelebA-256 and SD 1.5 sizes, and the text-conditioned
## miniature end to end (under 8 minutes) -> benchmarks/results/gpu_check_<gpu>.json
gpu-check: setup
	$(BIN)/python benchmarks/gpu_check.py --device cuda

## Open the book's notebooks in JupyterLab
lab: setup
	$(BIN)/jupyter lab book

clean:
	rm -rf _build
