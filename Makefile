# Setup is idempotent: the virtual environment in .venv is (re)built when setup.cfg,
# pyproject.toml or constraints.txt change. If the python you run with already has torch (a GPU
# user's CUDA build, also inside a conda env or another venv), the venv sees it and keeps it;
# otherwise the pinned CPU torch is installed (launchers/make_venv.py).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-slurm test-hosts clean

demo: $(STAMP)
	$(BIN)/python -m launchers.train --gin_file=gin/reward.gin --gin_bindings='lr=1e-4'

test: $(STAMP)
	$(BIN)/python -m pytest -q

# launchers/slurm_train.sh under a real two-node SLURM cluster on this machine whose nodes are
# two network namespaces (Debian's slurm-wlm, installed if missing; needs root to start the
# daemons and namespaces). About two minutes.
test-slurm: $(STAMP)
	tests/slurm/cluster.sh start
	$(BIN)/python -m pytest -q -m slurm tests/slurm; status=$$?; tests/slurm/cluster.sh stop; exit $$status

# Two nodes as two hosts: network namespaces with their own host names and /etc/hosts, joined
# by a virtual link (tests/hosts; needs root and iproute2). About two and a half minutes.
test-hosts: $(STAMP)
	$(BIN)/python -m pytest -q -m hosts tests/hosts

setup: $(STAMP)

$(STAMP): setup.cfg pyproject.toml constraints.txt launchers/make_venv.py
	$(PYTHON) launchers/make_venv.py $(VENV)
	@if grep -q '^torch==' $(VENV)/constraints.txt; then \
	  $(BIN)/pip install --disable-pip-version-check -q -c $(VENV)/constraints.txt torch; \
	fi
	$(BIN)/pip install --disable-pip-version-check -q -c $(VENV)/constraints.txt -e '.[test]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) runs
