# tests/fuzz/fuzz.mk — libFuzzer targets for every input parser (included by the Makefile).
#
#   make fuzz                          build, seed, run each target FUZZ_SECONDS [60] s
#   make fuzz FUZZ_SECONDS=15 FUZZ_TARGETS="gguf config"
#   make fuzz-build                    build $(FUZZ_BUILD)/fuzz_* only
#   make fuzz-clean                    remove $(FUZZ_BUILD)/ (corpora included)
#
# Targets (tests/fuzz/fuzz_TARGET.c): safetensors (header + whole file), st_index
# (model.safetensors.index.json), config (config.json), llama2c (.bin), gguf (model
# + embedded tokenizer), tok_model (tokenizer.model protobuf), tok_bin
# (tokenizer.bin), policy (option strings, then run), npz (.npz/.npy).
# The library is rebuilt with clang, -fsanitize=fuzzer-no-link plus ASan and
# UBSan, in $(FUZZ_BUILD)/. Corpora live in $(FUZZ_BUILD)/corpus/TARGET, seeded
# every run by tests/fuzz/seeds.sh from ../shared and small synthetic files (what
# libFuzzer adds is kept). A crash, leak, hang or huge allocation fails the run
# and leaves the input in $(FUZZ_BUILD)/crashes/TARGET/: put it under
# tests/fuzz/regress/TARGET/ (test_fuzz_regress replays those in `make test`).
# clang and libFuzzer are installed with apt-get when make runs as root.

FUZZ_CC       ?= clang
FUZZ_BUILD    ?= build-fuzz
FUZZ_SECONDS  ?= 60
FUZZ_PARALLEL ?= $(shell nproc 2>/dev/null || echo 1)
FUZZ_TARGETS  ?= safetensors st_index config llama2c gguf tok_model tok_bin policy npz
FUZZ_DEBS     := clang libclang-rt-dev libomp-dev

FUZZ_CFLAGS  := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all \
                -std=c11 -Wall -Wextra -fopenmp -D_GNU_SOURCE -Isrc -I. -MMD -MP
FUZZ_LIB_OBJ := $(patsubst %.c,$(FUZZ_BUILD)/obj/%.o,$(ENGINE_SRC) $(SIMD_SRC))
FUZZ_BIN     := $(addprefix $(FUZZ_BUILD)/fuzz_,$(FUZZ_TARGETS))

$(FUZZ_BUILD)/obj/simd/avx2.o:      ISA_FLAGS := $(AVX2_FLAGS)
$(FUZZ_BUILD)/obj/simd/avx2_%.o:    ISA_FLAGS := $(AVX2_FLAGS)
$(FUZZ_BUILD)/obj/simd/avx512.o:    ISA_FLAGS := $(AVX512_FLAGS)
$(FUZZ_BUILD)/obj/simd/avx512_%.o:  ISA_FLAGS := $(AVX512_FLAGS)

.PHONY: fuzz fuzz-build fuzz-deps fuzz-clean

fuzz-deps: deps
	$(call need_debs,$(FUZZ_DEBS))

$(FUZZ_BUILD)/obj/%.o: %.c | fuzz-deps
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link $(ISA_FLAGS) -c $< -o $@

$(FUZZ_BUILD)/libkvlab.a: $(FUZZ_LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(FUZZ_BUILD)/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz_util.h $(FUZZ_BUILD)/libkvlab.a | fuzz-deps
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $< $(FUZZ_BUILD)/libkvlab.a $(LDLIBS)

fuzz-build: $(FUZZ_BIN)

fuzz: $(FUZZ_BIN) $(KVLAB_BIN)
	bash tests/fuzz/seeds.sh $(FUZZ_BUILD)/corpus ./$(KVLAB_BIN) $${KVLAB_SHARED:-../shared}
	bash tests/fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_SECONDS) $(FUZZ_PARALLEL) $(FUZZ_TARGETS)

fuzz-clean:
	rm -rf $(FUZZ_BUILD)

# test_fuzz_regress.c #includes the targets: rebuild it when they change
$(BUILD)/tests/test_fuzz_regress: $(wildcard tests/fuzz/*.c tests/fuzz/*.h)

-include $(shell find $(FUZZ_BUILD)/obj -name '*.d' 2>/dev/null)
