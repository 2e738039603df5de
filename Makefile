# Two entry points: `make demo` and `make test`. Both create .venv on first use and reuse it after.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Installed first and on its own, so that the project's torch range is already satisfied and no
# newer (CUDA) build is pulled on a CPU machine. Override on a GPU machine, e.g. TORCH_SPEC=torch.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# pytest-xdist workers; each test module runs on one worker, so its module fixtures are built once
TEST_WORKERS ?= 2

.PHONY: demo test venv pacs clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev,tracking,runtimes,isles2024,dicom]"
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) -m pipeline demo

# Orthanc, the PACS the serve tests run against (Debian's orthanc and orthanc-dicomweb): installed with apt-get when
# missing; where that is not possible, those tests skip and say why.
ORTHANC_PLUGIN := /usr/share/orthanc/plugins/libOrthancDicomWeb.so
SUDO := $(shell test "$$(id -u)" = 0 || echo sudo -n)
pacs:
	@if ! { command -v Orthanc >/dev/null 2>&1 || test -x /usr/sbin/Orthanc; } || ! test -f $(ORTHANC_PLUGIN); then \
	  if command -v apt-get >/dev/null 2>&1; then \
	    $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq \
	      --no-install-recommends orthanc orthanc-dicomweb >/dev/null \
	      || echo "Orthanc could not be installed with apt-get: the serve tests will skip"; \
	  else echo "no apt-get: Orthanc is not installed and the serve tests will skip"; fi; \
	fi

test: $(STAMP) pacs
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadscope $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) demo_output .pytest_cache
