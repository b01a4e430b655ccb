# kvlab — build, run, test.
#   make          build ./kvlab
#   make run      the tour: one prompt with the full cache and with l2, then the
#                 per-layer key-norm/attention/sink table (MODEL=... to change)
#   make test     build and run the test suite
#   make bench    benchmark (see README)
# Missing Debian packages are installed with apt-get when run as root;
# otherwise the exact apt-get line is printed and make stops.

CC      ?= gcc
BUILD   ?= build
# The default model has attention sinks with low-norm sink keys and retrieves a
# passkey with the full cache: the one fixture on which the L2 paper's experiments
# mean something (README, "What the L2 paper's findings look like here").
MODEL   ?= ../shared/models/sink-26m
POLICY  ?= l2
RATIO   ?= 0.5
N       ?= 16
THREADS ?=
# make bench's small model (the README's Performance figures are on it)
BENCH_MODEL ?= ../shared/models/demo-25m
# make bench's decode-vs-context sweep: a model with attention sinks, context 4096
BENCH_CONTEXT_MODEL ?= ../shared/models/sink-26m
BENCH_CONTEXTS      ?= 512,1024,2048,4000
# The tour's prompt (PROMPT="..." replaces the file) and the text correlate reads;
# stories260k (TinyStories, 512-token context) gets a short story prompt and its own text.
ifneq ($(findstring stories260k,$(MODEL)),)
PROMPT      ?= Once upon a time, in a small village by the sea,
TOUR_TEXT   ?= ../shared/data/tinystories-valid-head.txt
else
PROMPT_FILE ?= docs/tour-prompt.txt
TOUR_TEXT   ?= ../shared/data/wikitext-2-raw-test.txt
endif

ARCH := $(shell $(CC) -dumpmachine 2>/dev/null | cut -d- -f1)

OPT      ?= -O3 -g
SAN      ?=
CFLAGS   := $(OPT) $(SAN) -std=c11 -Wall -Wextra -fopenmp -D_GNU_SOURCE -Isrc -I. -MMD -MP
LDFLAGS  := -fopenmp $(SAN)
LDLIBS   := -lsleef -lcjson -lz -lm

# ./kvlab for the normal build; BUILD=other-dir builds other-dir/kvlab
KVLAB_BIN := $(if $(filter build,$(BUILD)),kvlab,$(BUILD)/kvlab)

# ---- sources ---------------------------------------------------------------
ENGINE_SRC := $(filter-out src/cli/main.c,$(wildcard src/*/*.c))
SIMD_SRC   := simd/scalar.c simd/dispatch.c simd/peak.c simd/attn_fused.c
ifeq ($(ARCH),x86_64)
SIMD_SRC   += $(wildcard simd/x86_*.c simd/avx2*.c simd/avx512*.c)
endif
ifeq ($(ARCH),aarch64)
SIMD_SRC   += $(wildcard simd/neon*.c)
endif
LIB_OBJ    := $(patsubst %.c,$(BUILD)/obj/%.o,$(ENGINE_SRC) $(SIMD_SRC))
TEST_SRC   := $(wildcard tests/test_*.c)
TEST_BIN   := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRC))

# Per-ISA flags: only the kernel files of that ISA are compiled with them, so the
# rest of the binary runs on any x86-64 / aarch64 CPU (dispatch picks at run time).
# (a pattern's % must match at least one character, hence the two lines per ISA)
AVX2_FLAGS   := -mavx2 -mfma -mf16c
AVX512_FLAGS := -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512bf16 -mfma -mf16c
$(BUILD)/obj/simd/avx2.o:      ISA_FLAGS := $(AVX2_FLAGS)
$(BUILD)/obj/simd/avx2_%.o:    ISA_FLAGS := $(AVX2_FLAGS)
$(BUILD)/obj/simd/avx512.o:    ISA_FLAGS := $(AVX512_FLAGS)
$(BUILD)/obj/simd/avx512_%.o:  ISA_FLAGS := $(AVX512_FLAGS)

# ---- Debian packages ---------------------------------------------------------
DEB_BUILD_PKGS := gcc make libc6-dev libsleef-dev zlib1g-dev libcjson-dev
# the tests also draw every figure of experiments/plots (Debian's numpy and matplotlib)
DEB_TEST_PKGS  := python3-numpy python3-matplotlib
define need_debs
	@missing=""; for p in $(1); do \
	  dpkg-query -W -f='$${Status}\n' "$$p" 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null || exit 1; \
	  else \
	    echo "kvlab needs these Debian packages; run:"; echo "  sudo apt-get install -y$$missing"; exit 1; \
	  fi; \
	fi
endef

.PHONY: all deps test-deps run test test-asan bench clean
all: $(KVLAB_BIN)

deps:
	$(call need_debs,$(DEB_BUILD_PKGS))

test-deps:
	$(call need_debs,$(DEB_TEST_PKGS))

# ---- build -------------------------------------------------------------------
$(BUILD)/obj/%.o: %.c | deps
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(ISA_FLAGS) -c $< -o $@

$(BUILD)/libkvlab.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(KVLAB_BIN): $(BUILD)/obj/src/cli/main.o $(BUILD)/libkvlab.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: tests/%.c tests/check.h $(BUILD)/libkvlab.a | deps
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests -o $@ $< $(BUILD)/libkvlab.a $(LDFLAGS) $(LDLIBS)

# ---- main job ---------------------------------------------------------------
# The tour of what kvlab is for, in a few seconds: one prompt continued with the full
# KV cache and with a compressing policy (texts, KV memory of each, agreement), then
# per layer how key norms and attention go together and whether the model has sinks.
run: kvlab
	@echo "== 1. One prompt, continued with the full KV cache and with $(POLICY) at $(RATIO) compression"
	@echo "==    (l2 keeps the keys of lowest L2 norm; layers 0 and 1 stay whole)"
	./kvlab generate -m $(MODEL) $(if $(PROMPT),-p "$(PROMPT)",-f $(PROMPT_FILE)) -n $(N) \
	    --policy $(POLICY) --compression-ratio $(RATIO) --compare-full $(if $(THREADS),--threads $(THREADS))
	@echo
	@echo "== 2. Why low norms may matter: per layer, Spearman(key norm, attention), the L2 paper's"
	@echo "==    ALR, the attention lost by evicting half, and the attention sink on the first token"
	@rm -rf $(BUILD)/run/correlate
	./kvlab correlate -m $(MODEL) -f $(TOUR_TEXT) --chunk 512 --chunks 2 -o $(BUILD)/run/correlate \
	    $(if $(THREADS),--threads $(THREADS))
	@echo
	@echo "== Next: kvlab SUBCOMMAND --help; experiments/reproduce-l2.sh runs the paper's experiments;"
	@echo "==       README.md shows their results on this model."

# ---- benchmark -----------------------------------------------------------------
# The default model; decode against context length on sink-26m (full cache and
# policies at a budget, drawn by experiments/plots/decode_vs_context.py when
# matplotlib is there); then Llama-2-7B-shaped random weights if the disk has room
# (experiments/bench-7b.sh; BENCH_DIR=... to choose where they are written).
bench: kvlab
	@mkdir -p $(BUILD)/bench
	./kvlab bench -m $(BENCH_MODEL) --threads 1,2 --dtype f32,bf16 --json $(BUILD)/bench/bench-default.json
	./kvlab bench -m $(BENCH_CONTEXT_MODEL) --context $(BENCH_CONTEXTS) --gen 32 --repeat 3 \
	    --json $(BUILD)/bench/decode-vs-context-$(notdir $(BENCH_CONTEXT_MODEL)).json
	@if $(PLOT_PYTHON) -c 'import matplotlib, numpy' 2>/dev/null; then \
	  $(PLOT_PYTHON) experiments/plots/decode_vs_context.py $(BUILD)/bench/decode-vs-context-$(notdir $(BENCH_CONTEXT_MODEL)).json \
	    -o $(BUILD)/bench/plots; \
	else echo "no plot: python3-matplotlib / python3-numpy missing for $(PLOT_PYTHON)"; fi
	bash experiments/bench-7b.sh

# ---- tests -------------------------------------------------------------------
# Fragments may add targets to EXTRA_TESTS (run before the main suite).
EXTRA_TESTS :=
-include simd/simd.mk
-include tests/fuzz/fuzz.mk

test: test-deps $(KVLAB_BIN) $(TEST_BIN) $(EXTRA_TESTS)
	@KVLAB=./$(KVLAB_BIN) bash tests/run.sh $(BUILD)/tests

# The whole suite under AddressSanitizer + UndefinedBehaviorSanitizer (any report
# fails the test that triggered it), in build-asan/.
ASAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
test-asan:
	+$(MAKE) BUILD=build-asan OPT="-O1 -g" SAN="$(ASAN_FLAGS)" KVLAB_NO_ARM64=1 test

clean:
	rm -rf build build-asan build-arm64 kvlab

# The trace page's template is built into the binary by the assembler (.incbin in
# src/lab/trace_page.c), which the compiler's dependency files do not see.
$(foreach b,$(BUILD) $(ARM_BUILD) $(FUZZ_BUILD),$(b)/obj/src/lab/trace_page.o): src/lab/trace_page.html

-include experiments/plots/plots.mk
-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
