# anyfork: build, demo, test, install.
#   make            library (release), anyfork-serve and the C examples
#   make demo       build and run the hello example
#   make test       every test (cargo test runs the C examples too)
#   make bench      the spawn benchmark
#   make install PREFIX=/usr/local

PREFIX    ?= /usr/local
LIBDIR    ?= $(PREFIX)/lib
INCDIR    ?= $(PREFIX)/include
LIBEXEC   ?= $(PREFIX)/libexec
CARGO     ?= cargo
CC        ?= cc
CFLAGS    ?= -O2 -g
WARN      := -Wall -Wextra -Werror
REL       := target/release
OUT       := build/examples
VERSION   := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)

# Examples: every c-examples/*.c except *_worker.c, which become shared
# libraries the examples load into their processes with fork_require.
EXAMPLE_SRC := $(filter-out %_worker.c,$(wildcard c-examples/*.c))
WORKER_SRC  := $(wildcard c-examples/*_worker.c)
EXAMPLES    := $(patsubst c-examples/%.c,$(OUT)/%,$(EXAMPLE_SRC))
WORKERS     := $(patsubst c-examples/%.c,$(OUT)/lib%.so,$(WORKER_SRC))
LINK        := -L$(REL) -Wl,-rpath,$(abspath $(REL)) -lanyfork

.PHONY: all lib examples demo test bench install clean check-header

all: lib examples

lib:
	$(CARGO) build --release

$(OUT):
	mkdir -p $@

# libev and libuv examples need their libraries.
$(OUT)/libev: EXTRA := -lev
$(OUT)/libuv: EXTRA := -luv

$(OUT)/%: c-examples/%.c include/anyfork.h | lib $(OUT)
	$(CC) $(CFLAGS) $(WARN) -Iinclude $< -o $@ $(LINK) $(EXTRA)

$(OUT)/lib%.so: c-examples/%.c include/anyfork.h | lib $(OUT)
	$(CC) $(CFLAGS) $(WARN) -Iinclude -shared -fPIC $< -o $@

examples: $(EXAMPLES) $(WORKERS)

demo: lib $(OUT)/hello $(OUT)/libhello_worker.so
	$(OUT)/hello

test:
	$(CARGO) test

bench:
	$(CARGO) bench --bench spawn

clean:
	$(CARGO) clean
	rm -rf build
