# Setup is idempotent: the virtual environment in .venv is (re)built when setup.cfg,
# pyproject.toml or constraints.txt change. If the python you run with already has torch (a GPU
# user's CUDA build), the venv sees it and keeps it; otherwise the pinned CPU torch is installed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-slurm clean

demo: $(STAMP)
	$(BIN)/python -m launchers.train --gin_file=gin/reward.gin --gin_bindings='lr=1e-4'

test: $(STAMP)
	$(BIN)/python -m pytest -q

# launchers/slurm_train.sh under a real one-node SLURM cluster (Debian's slurm-wlm, installed
# if missing; needs root to start the daemons). About two minutes.
test-slurm: $(STAMP)
	tests/slurm/cluster.sh start
	$(BIN)/python -m pytest -q -m slurm tests/slurm; status=$$?; tests/slurm/cluster.sh stop; exit $$status

setup: $(STAMP)

$(STAMP): setup.cfg pyproject.toml constraints.txt
	@if $(PYTHON) -c "import torch" 2>/dev/null; then \
	  echo "setup: keeping the torch installed for $(PYTHON)"; \
	  $(PYTHON) -m venv --system-site-packages $(VENV); \
	  grep -v '^torch==' constraints.txt > $(VENV)/constraints.txt; \
	else \
	  $(PYTHON) -m venv $(VENV); \
	  $(BIN)/pip install --disable-pip-version-check -q torch==2.13.0; \
	  cp constraints.txt $(VENV)/constraints.txt; \
	fi
	$(BIN)/pip install --disable-pip-version-check -q -c $(VENV)/constraints.txt -e '.[test]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) runs
