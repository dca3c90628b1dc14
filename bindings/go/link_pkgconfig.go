//go:build !anyfork_nopkgconfig

package anyfork

// The header and the library come from `pkg-config anyfork`, which `make
// install` provides: nothing to set for the default prefix (/usr/local),
// PKG_CONFIG_PATH=<prefix>/lib/pkgconfig for another one. Outside /usr the
// flags carry -Wl,-rpath,<libdir>, so programs find libanyfork.so.0 at run
// time too. To build against a build tree instead, use
// -tags anyfork_nopkgconfig with CGO_CFLAGS and CGO_LDFLAGS (README.md).

// #cgo pkg-config: anyfork
import "C"
