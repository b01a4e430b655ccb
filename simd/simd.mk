# simd/simd.mk — the SIMD kernels' part of the build (included by the Makefile).
#
# On x86-64, `make test` also cross-compiles the kernel tests for aarch64 into
# $(ARM_BUILD)/ and tests/run.sh runs them under qemu-aarch64, so the NEON kernels
# are tested for real on every run. Missing Debian packages (cross compiler, qemu,
# arm64 libraries) are installed when make runs as root — which first adds arm64
# to dpkg's foreign architectures, and says so; otherwise the exact commands are
# printed and make stops. `make KVLAB_NO_ARM64=1 test` skips it.
#
#   make arm64-tests     build $(ARM_BUILD)/tests/* only
#   make clean-arm64     remove $(ARM_BUILD)/
#
# The arm64 library is the whole engine (the Makefile's ENGINE_SRC and SIMD_SRC
# minus the x86 files, plus simd/neon*.c); the programs run under qemu are
# ARM_TESTS. To cross-build and run every tests/test_*.c, set ARM_ALL := 1
# below (or `make ARM_ALL=1 test`); to add single programs instead:
#   ARM_TESTS   += test_ops

ARM_CC      ?= aarch64-linux-gnu-gcc
ARM_AR      ?= aarch64-linux-gnu-ar
ARM_BUILD   ?= build-arm64
# The whole engine is cross-built so one golden test runs under qemu too
# (tests/run.sh sets KVLAB_GOLDEN_QUICK=1 there: the stories260K cases only).
ARM_LIB_SRC := $(sort $(filter-out simd/avx2% simd/avx512%,$(SIMD_SRC)) $(wildcard simd/neon*.c)) $(ENGINE_SRC)
ARM_TESTS   := test_kernels test_golden
ARM_ALL     ?= 0
ifeq ($(ARM_ALL),1)
ARM_TESTS   := $(notdir $(basename $(TEST_SRC)))
endif
# The host flags minus any -m (machine) option, which would be for x86.
ARM_CFLAGS  ?= $(filter-out -m%,$(CFLAGS))
ARM_LDFLAGS ?= $(filter-out -m%,$(LDFLAGS))
ARM_LDLIBS  ?= $(LDLIBS)
ARM_DEBS    := gcc-aarch64-linux-gnu qemu-user libsleef-dev:arm64 zlib1g-dev:arm64 \
               libcjson-dev:arm64 libgomp1:arm64

ARM_LIB_OBJ  := $(patsubst %.c,$(ARM_BUILD)/obj/%.o,$(ARM_LIB_SRC))
ARM_TEST_BIN := $(addprefix $(ARM_BUILD)/tests/,$(ARM_TESTS))

# Like need_debs in the Makefile, plus the arm64 foreign architecture.
define need_arm64_debs
	@missing=""; for p in $(1); do \
	  dpkg-query -W -f='$${Status}\n' "$$p" 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    if ! dpkg --print-foreign-architectures | grep -qx arm64; then \
	      echo "adding dpkg architecture arm64 for the NEON cross toolchain: dpkg --add-architecture arm64"; \
	      echo "(make KVLAB_NO_ARM64=1 test skips the arm64 tests; dpkg --remove-architecture arm64 undoes it)"; \
	      dpkg --add-architecture arm64 || exit 1; \
	    fi; \
	    echo "installing Debian packages for the arm64 cross build:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      -o DPkg::Lock::Timeout=300 $$missing >/dev/null || exit 1; \
	  else \
	    echo "the arm64 cross build of the kernel tests needs Debian packages; run:"; \
	    echo "  sudo dpkg --add-architecture arm64"; \
	    echo "  sudo apt-get update"; \
	    echo "  sudo apt-get install -y$$missing"; \
	    echo "(or skip it: make KVLAB_NO_ARM64=1 test)"; exit 1; \
	  fi; \
	fi
endef

.PHONY: arm64-deps arm64-tests clean-arm64

# After the Makefile's own `deps` (never two apt-gets at once under make -j).
arm64-deps: deps
	$(call need_arm64_debs,$(ARM_DEBS))

$(ARM_BUILD)/obj/%.o: %.c | arm64-deps
	@mkdir -p $(dir $@)
	$(ARM_CC) $(ARM_CFLAGS) -c $< -o $@

$(ARM_BUILD)/libkvlab.a: $(ARM_LIB_OBJ)
	@rm -f $@
	$(ARM_AR) rcs $@ $^

$(ARM_BUILD)/tests/%: tests/%.c tests/check.h $(ARM_BUILD)/libkvlab.a | arm64-deps
	@mkdir -p $(dir $@)
	$(ARM_CC) $(ARM_CFLAGS) -Itests -o $@ $< $(ARM_BUILD)/libkvlab.a $(ARM_LDFLAGS) $(ARM_LDLIBS)

arm64-tests: $(ARM_TEST_BIN)

clean-arm64:
	rm -rf $(ARM_BUILD)
clean: clean-arm64

# tests/run.sh runs the programs in $KVLAB_ARM64_TESTS under qemu (none if empty).
ifeq ($(ARCH)-$(KVLAB_NO_ARM64),x86_64-)
EXTRA_TESTS += arm64-tests
export KVLAB_ARM64_TESTS := $(ARM_BUILD)/tests
else
export KVLAB_ARM64_TESTS :=
endif

-include $(shell find $(ARM_BUILD)/obj $(ARM_BUILD)/tests -name '*.d' 2>/dev/null)
