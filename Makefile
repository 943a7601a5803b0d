# Sound-guided manipulation of artistic paintings. `make help` lists the targets.
# Every target installs what it needs into .venv on first use; nothing relies on
# .venv/bin being on PATH (commands call .venv/bin/python explicitly).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

# glibc keeps freed memory instead of returning it to the OS: first-touch page
# faults dominate large CPU tensor ops on these machines (docs/reference.md §allocator). Heavy
# targets run with this allocator environment; benchmarks state it.
MALLOC_ENV := MALLOC_MMAP_THRESHOLD_=17179869184 MALLOC_TRIM_THRESHOLD_=17179869184 MALLOC_TOP_PAD_=1073741824

.DEFAULT_GOAL := help
.PHONY: help install test test-fast lint toyworld toy-audio bench-audio bench-generator demo weights figures bench-manip bench bench-projection bench-ops train sweep eval bench-audio-clip bench-frame-cache train-mapper toy-mapper bench-mapper app browser bench-app

help: ## Show this help (targets and one-line descriptions)
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP) ## Create .venv and install the package (editable) with dev extras
	@echo "installed into $(VENV)"

test: $(STAMP) browser ## Run the whole test suite (slow tests included)
	$(MALLOC_ENV) $(PY) -m pytest

# The page's browser tests drive the distribution's Chromium; installed here when missing and root + apt allow it
# (otherwise those tests skip with the reason, and fail under CI=true).
browser: ## Install Debian's chromium for the browser tests when missing (root + apt only)
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium (apt) for the browser tests"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null || \
	    echo "apt-get install chromium failed: the browser tests will skip (fail under CI=true)"; \
	  else echo "no chromium and no root/apt: the browser tests will skip (fail under CI=true)"; fi; }

APP_CONFIG ?= experiments/app/toyworld.yaml
app: $(STAMP) ## The Gradio page on http://127.0.0.1:7860 (APP_CONFIG=yaml; ARGS="--port 8000 --share")
	$(MALLOC_ENV) $(PY) -m experiments.app --config $(APP_CONFIG) $(ARGS)

test-fast: $(STAMP) ## Run the suite without tests marked slow
	$(MALLOC_ENV) $(PY) -m pytest -m "not slow"

lint: $(STAMP) ## Run ruff over the repository
	$(PY) -m ruff check .

bench-audio: $(STAMP) ## Audio loading + log-mel vs the official librosa path, DataModule setup on 200k rows
	$(MALLOC_ENV) $(PY) benchmarks/bench_audio.py

bench-generator: $(STAMP) ## StyleGAN2 256px forward and W+ step: ops ref vs kernels, our modconv vs grouped conv
	$(MALLOC_ENV) $(PY) benchmarks/bench_generator.py

# The demo runs in the learned toy world (committed toy CLIP + toy StyleGAN2); DEMO_CONFIG=experiments/demo.yaml
# runs the same pipeline with random tiny networks instead.
DEMO_CONFIG ?= experiments/toyworld/demo.yaml

demo: $(STAMP) ## The whole pipeline offline on CPU in the learned toy world (sound set, audio training, edits, mapper column, story video), 1-2 min idle on 2 cores
	$(MALLOC_ENV) WANDB_MODE=$${WANDB_MODE:-offline} $(PY) -m experiments.demo --config $(DEMO_CONFIG)

train: CONFIG ?= experiments/audio_clip/vggsound.yaml
train: $(STAMP) ## Train the audio encoder into CLIP space (CONFIG=yaml; ARGS="--ckpt_path last" resumes)
	$(MALLOC_ENV) $(PY) -m experiments.train fit --config $(CONFIG) $(ARGS)

sweep: SWEEP ?= experiments/sweeps/audio_clip.yaml
sweep: $(STAMP) ## Create the W&B sweep over audio-encoder training; prints the id for `wandb agent` / sweep_agent.sbatch
	$(VENV)/bin/wandb sweep $(SWEEP)

eval: CKPT ?= outputs/audio_clip/checkpoints/best.ckpt
eval: VGGSOUND ?= data/vggsound
eval: ESC50 ?= data/ESC-50-master
eval: US8K ?= data/UrbanSound8K
eval: $(STAMP) ## Zero-shot + linear-probe eval of CKPT on VGGSound test, ESC-50, UrbanSound8K (those present)
	$(MALLOC_ENV) $(PY) -m experiments.eval $(CKPT) \
		$$(test -d $(VGGSOUND) && echo --vggsound_root $(VGGSOUND)) \
		$$(test -d $(ESC50) && echo --esc50_root $(ESC50)) \
		$$(test -d $(US8K) && echo --urbansound8k_root $(US8K)) $(EVAL_ARGS)

weights: $(STAMP) ## Download CLIP + StyleGAN2 checkpoints of a real run (resumable; WEIGHTS="name ..." picks others)
	$(PY) -m experiments.weights $(WEIGHTS)

figures: $(STAMP) ## The paper's Figure 3 (sources x seven sounds) -> figures/paper_fig3.png; lists missing inputs
	$(MALLOC_ENV) $(PY) -m experiments.figures --config experiments/figures/paper_fig3.yaml

toyworld: $(STAMP) ## Rebuild the toy world from seeds: paintings, toy CLIP, toy StyleGAN2, metrics (~25 min, 2 cores)
	$(MALLOC_ENV) $(PY) -m experiments.toyworld.build --out experiments/toyworld/weights --overwrite

toy-audio: $(STAMP) ## Rebuild the toy world's audio encoder: fetch the real recordings (Debian), train, metrics
	$(PY) -m experiments.toyworld.realsounds fetch
	$(MALLOC_ENV) nice -n 10 $(PY) -m experiments.toyworld.train_audio --out experiments/toyworld/weights --overwrite

train-mapper: CONFIG ?= experiments/mapper/wikiart.yaml
train-mapper: $(STAMP) ## Train the sound-conditioned latent mapper (CONFIG=yaml; ARGS="--ckpt_path last" resumes)
	$(MALLOC_ENV) $(PY) -m experiments.train_mapper fit --config $(CONFIG) $(ARGS)

toy-mapper: $(STAMP) ## Rebuild experiments/toyworld/weights/toy_mapper.pt on the toy world's encoder and make demo's, with the real recordings' training split (~7 min idle, 1 thread)
	$(PY) -m experiments.toyworld.realsounds fetch
	$(MALLOC_ENV) nice -n 10 $(PY) -m experiments.toyworld.build_mapper --out experiments/toyworld/weights --overwrite \
		--audio-encoder experiments/toyworld/weights/toy_audio_encoder.pt --audio-encoder demo --recordings toyworld

bench-mapper: $(STAMP) ## Toy world: mapper vs Eq. 2 optimisation (detectors, preservation, time per edit), animate frames/s
	$(MALLOC_ENV) $(PY) benchmarks/bench_mapper.py

bench-manip: $(STAMP) ## Eq. 2 edits: pair-steps/s of a batch of 8 pairs vs 8 single-pair runs (tiny 64 px, CPU)
	$(MALLOC_ENV) $(PY) benchmarks/bench_manipulation.py

bench-projection: $(STAMP) ## Projector round trip (image error vs start) and CPU cost per image, tiny 16/64 px
	$(MALLOC_ENV) $(PY) benchmarks/bench_projection.py

bench-audio-clip: $(STAMP) ## Audio-CLIP train step: cached class-prompt embeddings vs the text tower every step
	$(MALLOC_ENV) $(PY) benchmarks/bench_audio_clip.py

bench-frame-cache: $(STAMP) ## Frame cache per clip (PyAV decode, ViT-B/32 image tower, bytes), extrapolated to VGGSound
	$(MALLOC_ENV) $(PY) benchmarks/bench_frame_cache.py

bench-app: $(STAMP) browser ## The page in Chromium: click-to-image, refine per step, live updates/s + latency, memory
	$(MALLOC_ENV) $(PY) benchmarks/bench_app.py

bench-ops: $(STAMP) ## Fused bias_act / upfirdn2d kernels (C++, and CUDA if present) vs idiomatic PyTorch
	$(MALLOC_ENV) $(PY) benchmarks/bench_ops.py

# Every bench-* target in this Makefile, so new benchmarks join `make bench` without editing it.
BENCH_TARGETS = $(shell sed -n 's/^\(bench-[a-zA-Z0-9_-]*\):.*/\1/p' $(MAKEFILE_LIST))

bench: $(STAMP) ## Run every benchmark (all bench-* targets); results belong in benchmarks/RESULTS.md
	@for t in $(BENCH_TARGETS); do $(MAKE) --no-print-directory $$t || exit 1; done
