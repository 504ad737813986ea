# kbuddy: the commands a person types. CMake does the building; this file
# strings the builds together.
#
#   make demo     run the main demo (the QEMU kernel; hosted fallback)
#   make check    everything CI runs: tests in several builds, sanitizers,
#                 fuzzing, coverage, the freestanding cross-compile, linters,
#                 the install
# Both first install the Debian packages of any tool they miss
# (scripts/deps.sh; KBUDDY_NO_INSTALL=1: only say what to install).
#   make bench    the benchmark table
#   make install  PREFIX=/usr/local  (headers, libkbuddy.a, libkbuddy_malloc.a,
#                 libkbuddy-malloc.so, CMake package, pkg-config files, sources)

CC ?= cc
PREFIX ?= /usr/local
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
FUZZ_SECONDS ?= 60
COVERAGE_MIN ?= 95
CMAKE ?= cmake

BUILD ?= build
CORE_SRC := $(wildcard src/*.c)

.PHONY: all demo demo-hosted check test test-release test-shift4 test-small test-asan test-tsan coverage \
        fuzz freestanding lint bench install test-install clean

all:
	$(CMAKE) -S . -B $(BUILD)/release -DCMAKE_BUILD_TYPE=Release >/dev/null
	$(CMAKE) --build $(BUILD)/release -j$(JOBS)

# The QEMU kernel, after scripts/deps.sh has installed the cross compiler
# and QEMU if they were missing. Where they cannot be installed, the same
# demo runs as a Linux program (the hosted fallback), and says so.
demo:
	@if [ ! -f examples/riscv/Makefile ]; then $(MAKE) --no-print-directory demo-hosted; \
	 elif ./scripts/deps.sh demo; then $(MAKE) --no-print-directory -C examples/riscv run; \
	 else echo "kbuddy demo: the RISC-V kernel cannot be booted here (the tools above could not be"; \
	   echo "  installed): running the hosted fallback, the same demo as a Linux program"; echo; \
	   $(MAKE) --no-print-directory -C examples/riscv hosted; fi

demo-hosted: all
	./$(BUILD)/release/examples/hosted_demo

# The README's test command. Each step prints its own summary; the last
# line is the total.
check:
	@./scripts/check.sh

test-release:
	$(CMAKE) -S . -B $(BUILD)/release -DCMAKE_BUILD_TYPE=Release >/dev/null
	$(CMAKE) --build $(BUILD)/release -j$(JOBS)
	cd $(BUILD)/release && ctest --output-on-failure -j$(JOBS)

test: test-release

# The other granule the header allows: 16-byte minimum blocks. Only the
# heap depends on it, so the heap and thread tests run.
test-shift4:
	$(CMAKE) -S . -B $(BUILD)/shift4 -DCMAKE_BUILD_TYPE=Release -DCMAKE_C_FLAGS=-DKBUDDY_MIN_BLOCK_SHIFT=4 \
	  -DKBUDDY_BENCH=OFF -DKBUDDY_HOSTED=OFF >/dev/null
	$(CMAKE) --build $(BUILD)/shift4 -j$(JOBS)
	cd $(BUILD)/shift4 && ctest --output-on-failure -j$(JOBS) -R 'heap|threads'

# The core built for size (MinSizeRel, -Os: KBUDDY_SMALL, include/kbuddy.h),
# whose engine runs one take and one release for every kind of engine, tested
# at run time: the heap, frame and thread tests.
test-small:
	$(CMAKE) -S . -B $(BUILD)/small -DCMAKE_BUILD_TYPE=MinSizeRel -DKBUDDY_BENCH=OFF \
	  -DKBUDDY_HOSTED=OFF >/dev/null
	$(CMAKE) --build $(BUILD)/small -j$(JOBS)
	cd $(BUILD)/small && ctest --output-on-failure -j$(JOBS) -R 'heap|frames|threads'

test-asan:
	CC=clang $(CMAKE) -S . -B $(BUILD)/asan -DCMAKE_BUILD_TYPE=Debug \
	  -DKBUDDY_SANITIZE=address,undefined -DKBUDDY_BENCH=OFF >/dev/null
	$(CMAKE) --build $(BUILD)/asan -j$(JOBS)
	cd $(BUILD)/asan && ctest --output-on-failure -j$(JOBS)

test-tsan:
	CC=clang $(CMAKE) -S . -B $(BUILD)/tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DKBUDDY_SANITIZE=thread -DKBUDDY_BENCH=OFF >/dev/null
	$(CMAKE) --build $(BUILD)/tsan -j$(JOBS)
	cd $(BUILD)/tsan && ctest --output-on-failure -R 'thread|lock|smp'

coverage:
	CC=gcc $(CMAKE) -S . -B $(BUILD)/cov -DCMAKE_BUILD_TYPE=Debug -DKBUDDY_COVERAGE=ON \
	  -DKBUDDY_BENCH=OFF -DKBUDDY_HOSTED=OFF >/dev/null
	$(CMAKE) --build $(BUILD)/cov -j$(JOBS)
	find $(BUILD)/cov -name '*.gcda' -delete
	cd $(BUILD)/cov && ctest --output-on-failure -j$(JOBS)
	gcovr -r . $(BUILD)/cov --filter 'src/' --object-directory $(BUILD)/cov --print-summary \
	  --fail-under-line $(COVERAGE_MIN) -o $(BUILD)/cov/coverage.txt
	@sed -n '1,40p' $(BUILD)/cov/coverage.txt

fuzz:
	CC=clang $(CMAKE) -S . -B $(BUILD)/fuzz -DKBUDDY_FUZZ=ON -DKBUDDY_BENCH=OFF \
	  -DKBUDDY_HOSTED=OFF >/dev/null
	$(CMAKE) --build $(BUILD)/fuzz -j$(JOBS)
	@set -e; for f in $(BUILD)/fuzz/fuzz_*; do \
	  [ -x "$$f" ] || continue; \
	  echo "== $$f for $(FUZZ_SECONDS)s"; \
	  mkdir -p $(BUILD)/fuzz/corpus-$$(basename $$f); \
	  $$f -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	      $(BUILD)/fuzz/corpus-$$(basename $$f) 2>&1 | tail -n 12; \
	done

# The core must build with nothing but the compiler, and its objects may
# need no symbol beyond memcpy/memset/memmove.
freestanding:
	@./scripts/freestanding.sh

# The freestanding code a kernel compiles: the core and the global allocator.
LINT_SRC := $(CORE_SRC) malloc/kbuddy_malloc.c

lint:
	cppcheck --std=c11 --enable=warning,style,performance,portability --inline-suppr \
	  --error-exitcode=1 --quiet -Iinclude -Isrc $(LINT_SRC)
	clang-tidy --quiet $(LINT_SRC) -- -std=c11 -Iinclude -Isrc

bench: all
	./$(BUILD)/release/bench/kbuddy_bench

install: all
	$(CMAKE) --install $(BUILD)/release --prefix $(PREFIX)

# Install into a temporary prefix and build an outside project against it:
# find_package, pkg-config, add_subdirectory, the installed sources, LD_PRELOAD.
test-install:
	@./tests/consumer/run.sh

clean:
	rm -rf $(BUILD)
