# anyfork: build, demo, test, install.
#   make            library (release), anyfork-serve and the C examples
#   make demo       build and run the hello example
#   make test       every test (cargo test runs the C examples too), then
#                   one summary line per suite
#   make bench      the spawn and Perl benchmarks, drawn as doc/spawn.svg
#   make sanitize   the C examples and C tests built with ASan + UBSan, run
#   make install PREFIX=/usr/local   (DESTDIR= for staging; runs ldconfig
#                   when installing to the system as root)

PREFIX    ?= /usr/local
LIBDIR    ?= $(PREFIX)/lib
INCDIR    ?= $(PREFIX)/include
LIBEXEC   ?= $(PREFIX)/libexec
BINDIR    ?= $(PREFIX)/bin
MANDIR    ?= $(PREFIX)/share/man
CMAKEDIR  ?= $(LIBDIR)/cmake/anyfork
CARGO     ?= cargo
CC        ?= cc
CFLAGS    ?= -O2 -g
WARN      := -Wall -Wextra -Werror
PROFILE   ?= release
# cargo's output directory: $(CARGO_TARGET_DIR) when set, else target/.
TARGET    := $(if $(CARGO_TARGET_DIR),$(CARGO_TARGET_DIR),target)
REL       := $(TARGET)/$(PROFILE)
OUT       := build/examples
VERSION   := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)

# Examples: every c-examples/*.c except *_worker.c, which become shared
# libraries the examples load into their processes with fork_require.
EXAMPLE_SRC := $(filter-out %_worker.c,$(wildcard c-examples/*.c))
CXX_SRC     := $(wildcard c-examples/*.cpp)
WORKER_SRC  := $(wildcard c-examples/*_worker.c)
EXAMPLES    := $(patsubst c-examples/%.c,$(OUT)/%,$(EXAMPLE_SRC)) $(patsubst c-examples/%.cpp,$(OUT)/%,$(CXX_SRC))
WORKERS     := $(patsubst c-examples/%.c,$(OUT)/lib%.so,$(WORKER_SRC))
LINK        := -L$(REL) -Wl,-rpath,$(abspath $(REL)) -lanyfork

.PHONY: all lib examples demo deps test bench install clean sanitize

all: lib examples

# The library's SONAME is libanyfork.so.$(SOVER); cargo makes only
# libanyfork.so, so programs linked in the build tree need this link.
lib:
	$(CARGO) build $(if $(filter release,$(PROFILE)),--release,)
	ln -sf libanyfork.so $(REL)/libanyfork.so.$(SOVER)

$(OUT):
	mkdir -p $@

# libev and libuv examples need their libraries.
$(OUT)/libev: EXTRA := -lev
$(OUT)/libuv $(OUT)/rpc_pool: EXTRA := -luv
# Template and early forks run the program's own functions: dlsym must
# find them, so these export their symbols.
$(OUT)/template $(OUT)/early: EXTRA := -rdynamic

$(OUT)/%: c-examples/%.c include/anyfork.h | lib $(OUT)
	$(CC) $(CFLAGS) $(WARN) -Iinclude $< -o $@ $(LINK) $(EXTRA)

$(OUT)/%: c-examples/%.cpp include/anyfork.hpp include/anyfork.h | lib $(OUT)
	$(CXX) -std=c++17 $(CFLAGS) $(WARN) -Iinclude $< -o $@ $(LINK)

$(OUT)/lib%.so: c-examples/%.c include/anyfork.h | lib $(OUT)
	$(CC) $(CFLAGS) $(WARN) -Iinclude -shared -fPIC $< -o $@

examples: $(EXAMPLES) $(WORKERS)

demo: lib $(OUT)/hello $(OUT)/libhello_worker.so
	$(OUT)/hello

# Debian packages the tests need: libev and libuv for the loop examples,
# cmake for the CMake package, the toolchains the language bindings are
# tested with (python3-venv: the pip install test makes a virtualenv;
# libanyevent-fork-perl: the Perl benchmark and drop-in tests compare with it;
# openssh-server and -client: the remote-template tests start an sshd of their own).
# apt's output is kept in build/apt.log and shown only if it fails.
DEPS := libev-dev libuv1-dev pkg-config cmake golang-go ruby ruby-ffi libffi-platypus-perl libanyevent-perl libanyevent-fork-perl python3 python3-venv valgrind openssh-server openssh-client
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APTLOG := build/apt.log
deps:
	@missing=""; for p in $(DEPS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing (apt-get; log in $(APTLOG))"; mkdir -p build; \
	  if ! { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; } >$(APTLOG) 2>&1; then \
	    cat $(APTLOG); echo "make deps: installing$$missing failed (output above)"; exit 1; \
	  fi; \
	fi

# Every suite runs (--no-fail-fast); the output is kept in build/test.log
# and ends with one line per suite: its name, ok or FAILED, the counts.
TESTLOG := build/test.log
test: deps
	@mkdir -p build
	@{ $(CARGO) test --no-fail-fast 2>&1; echo $$? >$(TESTLOG).rc; } | tee $(TESTLOG)
	@echo; echo "summary (from $(TESTLOG)):"; \
	awk '/^ *Running /{ if (name != "") print "  " name ": no result (crashed?)"; \
	        name = ($$2 == "unittests" ? $$3 : $$2); sub(/^tests\//, "", name); next } \
	     /^ *Doc-tests /{ if (name != "") print "  " name ": no result (crashed?)"; name = "doc-tests " $$2; next } \
	     /^test result: / && name != "" { r = $$3; sub(/\.$$/, "", r); \
	        printf "  %-28s %-6s %s %s, %s %s, %s %s  (%s)\n", name, r, $$4, "passed", $$6, "failed", $$8, "ignored", $$NF; name = "" } \
	     END { if (name != "") print "  " name ": no result (crashed?)" }' $(TESTLOG); \
	rc=$$(cat $(TESTLOG).rc); [ "$$rc" = 0 ] && echo "make test: all suites passed" || echo "make test: FAILED (cargo test exit status $$rc)"; \
	exit $$rc

# The C examples and the C tests built with AddressSanitizer and UBSan and
# run (the Rust library itself is not instrumented). Worker libraries are
# loaded into anyfork-serve, which has no ASan runtime: they get UBSan only.
SAN       := build/sanitize
SANFLAGS  := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all -g -O1
SAN_LIB   := -fsanitize=undefined -fno-sanitize-recover=all -g -O1 -shared -fPIC
SAN_ENV   := ANYFORK_SERVE=$(abspath $(REL))/anyfork-serve ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=86 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
SAN_C     := $(filter-out %_worker.c,$(wildcard c-examples/*.c))

sanitize: lib
	@mkdir -p $(SAN)
	@set -e; \
	for w in $(WORKER_SRC) tests/c/children.c; do \
	  n=$$(basename $$w .c); \
	  $(CC) $(SAN_LIB) $(WARN) -Iinclude $$w -o $(SAN)/lib$$n.so; \
	done; \
	for src in $(SAN_C) tests/c/api_errors.c tests/c/bad_input.c tests/c/fd_exhaustion.c \
	           tests/c/signal_probe.c tests/c/loop_exit.c tests/c/foreign_uid.c tests/c/stress_threads.c; do \
	  n=$$(basename $$src .c); extra=""; \
	  case $$n in libev) extra=-lev;; libuv|rpc_pool) extra=-luv;; template|early|signal_probe) extra=-rdynamic;; \
	    api_errors|stress_threads) extra=-pthread;; esac; \
	  $(CC) $(SANFLAGS) $(WARN) -Iinclude $$src -o $(SAN)/$$n $(LINK) $$extra; \
	done
	@set -e; cd $(SAN); fail=0; \
	run() { name="$$1"; shift; \
	  if $(SAN_ENV) "$$@" >"$$name.out" 2>"$$name.err"; then echo "sanitize: $$name ok"; \
	  else echo "sanitize: $$name FAILED (status $$?)"; cat "$$name.out" "$$name.err"; fail=1; fi; }; \
	for e in $(notdir $(basename $(SAN_C))); do run $$e ./$$e; done; \
	run api_errors ./api_errors $(abspath $(SAN))/libchildren.so; \
	run bad_input ./bad_input $(abspath $(SAN))/libchildren.so; \
	run fd_exhaustion ./fd_exhaustion $(abspath $(SAN))/libchildren.so; \
	run signal_probe_untouched ./signal_probe $(abspath $(SAN))/libchildren.so untouched; \
	run signal_probe_messy ./signal_probe $(abspath $(SAN))/libchildren.so messy; \
	run loop_exit ./loop_exit; \
	run foreign_uid ./foreign_uid $(abspath $(SAN))/libchildren.so; \
	run stress_threads ./stress_threads; \
	exit $$fail

# The spawn benchmark (BENCH_ARGS: e.g. --quick, --no-2g), then the Perl
# binding's (when AnyEvent::Fork is installed; PERL_BENCH_ARGS: e.g.
# --grow-mb 200), then doc/spawn.svg drawn from what they wrote.
BENCH_ARGS      ?=
PERL_BENCH_ARGS ?=
bench: lib
	$(CARGO) bench --bench spawn -- $(BENCH_ARGS)
	@if perl -MAnyEvent::Fork -e1 2>/dev/null; then \
	  echo "perl bindings/perl/bench/fork-vs-anyevent.pl $(PERL_BENCH_ARGS) > $(TARGET)/bench/perl.md"; \
	  ANYFORK_LIB=$(abspath $(REL)) ANYFORK_SERVE=$(abspath $(REL))/anyfork-serve \
	    perl -I bindings/perl/lib bindings/perl/bench/fork-vs-anyevent.pl $(PERL_BENCH_ARGS) \
	    > $(TARGET)/bench/perl.md.tmp && mv $(TARGET)/bench/perl.md.tmp $(TARGET)/bench/perl.md; \
	else \
	  echo "AnyEvent::Fork is not installed (libanyevent-fork-perl): the chart has no Perl figures"; \
	  rm -f $(TARGET)/bench/perl.md; \
	fi
	python3 tools/bench_chart.py $(TARGET)/bench doc/spawn.svg

# The SONAME (libanyfork.so.0) is set by build.rs; the file is
# libanyfork.so.$(VERSION) with the SONAME and the dev link pointing at it.
# ldconfig refreshes the loader's cache when installing as root to the
# system's library directory (/usr/local/lib or /usr/lib), so
# that dlopen("libanyfork.so.0") (the Python, Ruby and Perl bindings)
# finds it with no environment variable.
SOVER := 0
# Outside /usr, `pkg-config --libs anyfork` carries -Wl,-rpath,<libdir>:
# a program (C, C++, Go's cgo) built with it runs from any prefix without
# LD_LIBRARY_PATH. RPATH= turns that off.
comma := ,
RPATH ?= $(if $(filter /usr /usr/,$(PREFIX)),,-Wl$(comma)-rpath$(comma)$${libdir} )
SUBST := sed -e 's|@RPATH@|$(RPATH)|g; s|@PREFIX@|$(PREFIX)|g; s|@LIBDIR@|$(LIBDIR)|g; s|@INCDIR@|$(INCDIR)|g; s|@VERSION@|$(VERSION)|g; s|@SOVER@|$(SOVER)|g'
install: lib
	install -d $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(INCDIR) $(DESTDIR)$(LIBEXEC) \
	  $(DESTDIR)$(BINDIR) $(DESTDIR)$(CMAKEDIR) $(DESTDIR)$(MANDIR)/man3
	install -m 755 $(REL)/libanyfork.so $(DESTDIR)$(LIBDIR)/libanyfork.so.$(VERSION)
	ln -sf libanyfork.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libanyfork.so.$(SOVER)
	ln -sf libanyfork.so.$(SOVER) $(DESTDIR)$(LIBDIR)/libanyfork.so
	install -m 644 $(REL)/libanyfork.a $(DESTDIR)$(LIBDIR)/libanyfork.a
	install -m 644 include/anyfork.h include/anyfork.hpp $(DESTDIR)$(INCDIR)/
	install -m 755 $(REL)/anyfork-serve $(DESTDIR)$(LIBEXEC)/anyfork-serve
	ln -sf $(LIBEXEC)/anyfork-serve $(DESTDIR)$(BINDIR)/anyfork-serve
	$(SUBST) anyfork.pc.in > $(DESTDIR)$(LIBDIR)/pkgconfig/anyfork.pc
	$(SUBST) cmake/anyforkConfig.cmake.in > $(DESTDIR)$(CMAKEDIR)/anyforkConfig.cmake
	$(SUBST) cmake/anyforkConfigVersion.cmake.in > $(DESTDIR)$(CMAKEDIR)/anyforkConfigVersion.cmake
	install -m 644 doc/anyfork.3 $(DESTDIR)$(MANDIR)/man3/anyfork.3
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" = 0 ] && command -v ldconfig >/dev/null; then \
	  case "$(LIBDIR)" in /usr/lib|/usr/lib64|/usr/local/lib|/usr/local/lib64) \
	    ldconfig || echo "make install: ldconfig failed; run it to make $(LIBDIR)/libanyfork.so.0 known to the loader";; \
	  esac; \
	fi

clean:
	$(CARGO) clean
	rm -rf build
