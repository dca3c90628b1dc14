//go:build !anyfork_pkgconfig

package anyfork

// The library is found by the C toolchain's default paths, or by the
// directories in CGO_CFLAGS (-I<prefix>/include) and CGO_LDFLAGS
// (-L<libdir> -Wl,-rpath,<libdir>). Build with -tags anyfork_pkgconfig to
// ask pkg-config instead (after `make install`).

// #cgo LDFLAGS: -lanyfork
import "C"
