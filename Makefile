# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv when missing.
# `make study` runs the toy-scale study (tens of minutes on 2 cores).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# DeepSpeed builds no C++ ops at install time; it JIT-compiles the few it needs on first use.
export DS_BUILD_OPS := 0
export PIP_DISABLE_PIP_VERSION_CHECK := 1

# lmms-eval pins wandb 0.25.0, which caps protobuf below 7, so the resolver picks protobuf 6; but
# transformers 5's sentencepiece converter (tokenizer.model -> fast tokenizer, e.g. Vicuna/LLaMA)
# was generated for protobuf 7 and fails on 6. Restore 7 afterwards: wandb then does not import,
# which only disables lmms-eval's optional --wandb_args reporting.
PROTOBUF := protobuf==7.36.2

.PHONY: demo study test lint format clean-venv paper-shapes

# The original LLaVA code (llava-torch) pins transformers 4.36 / torch 2.0: it is installed
# without its dependencies (llava_patches shims it onto ours); the [llava] extra adds the one
# it needs beyond ours (sentencepiece).
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt torch torchvision
	$(PY) -m pip install -q -c constraints.txt -e ".[train,eval,test,openclip,llava,lmms]"
	$(PY) -m pip install -q --no-deps llava-torch==1.2.2.post1
	$(PY) -m pip install -q --no-deps $(PROTOBUF)
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/genhancer demo --output runs/demo --overwrite

# The toy-scale study (README, "Does it enhance?"): 5 settings x 3 seeds through `enhance`.
study: $(STAMP)
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(VENV)/bin/genhancer toy study --output runs/study --jobs 2

test: $(STAMP)
	$(PY) -m ruff check genhancer_llava llava_patches tests benchmarks
	$(PY) -m ruff format --check genhancer_llava llava_patches tests benchmarks
	$(PY) -m pytest -q

# Every paper preset at its true size on the CPU (batch 1, one preset per process): one line
# each with tokens, parameters, seconds and peak memory. Needs about 14 GB free; ~30-60 min.
paper-shapes: $(STAMP)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(PY) benchmarks/paper_shapes.py

format: $(STAMP)
	$(PY) -m ruff format genhancer_llava llava_patches tests benchmarks
	$(PY) -m ruff check --fix genhancer_llava llava_patches tests benchmarks

clean-venv:
	rm -rf $(VENV)
