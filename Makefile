# kvlab — build, run, test.
#   make          build ./kvlab
#   make run      generate a continuation with the default model (MODEL=... to change)
#   make test     build and run the test suite
#   make bench    benchmark (see README)
# Missing Debian packages are installed with apt-get when run as root;
# otherwise the exact apt-get line is printed and make stops.

CC      ?= gcc
BUILD   ?= build
MODEL   ?= ../shared/models/demo-25m
PROMPT  ?= Once upon a time, in a small village by the sea,
N       ?= 64
THREADS ?=

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
SIMD_SRC   := simd/scalar.c simd/dispatch.c simd/peak.c
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

.PHONY: all deps run test test-asan bench clean
all: $(KVLAB_BIN)

deps:
	$(call need_debs,$(DEB_BUILD_PKGS))

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
run: kvlab
	./kvlab generate -m $(MODEL) -p "$(PROMPT)" -n $(N) $(if $(THREADS),--threads $(THREADS))

# ---- benchmark -----------------------------------------------------------------
# The default model, then Llama-2-7B-shaped random weights if the disk has room
# (experiments/bench-7b.sh; BENCH_DIR=... to choose where they are written).
bench: kvlab
	@mkdir -p $(BUILD)/bench
	./kvlab bench -m $(MODEL) --threads 1,2 --dtype f32,bf16 --json $(BUILD)/bench/bench-default.json
	bash experiments/bench-7b.sh

# ---- tests -------------------------------------------------------------------
# Fragments may add targets to EXTRA_TESTS (run before the main suite).
EXTRA_TESTS :=
-include simd/simd.mk
-include tests/fuzz/fuzz.mk

test: $(KVLAB_BIN) $(TEST_BIN) $(EXTRA_TESTS)
	@KVLAB=./$(KVLAB_BIN) bash tests/run.sh $(BUILD)/tests

# The whole suite under AddressSanitizer + UndefinedBehaviorSanitizer (any report
# fails the test that triggered it), in build-asan/.
ASAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
test-asan:
	+$(MAKE) BUILD=build-asan OPT="-O1 -g" SAN="$(ASAN_FLAGS)" KVLAB_NO_ARM64=1 test

clean:
	rm -rf build build-asan build-arm64 kvlab

-include experiments/plots/plots.mk
-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
