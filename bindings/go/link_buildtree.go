//go:build anyfork_nopkgconfig

package anyfork

// With -tags anyfork_nopkgconfig the header and library are found through
// the C toolchain's default paths and CGO_CFLAGS (-I<root>/include) and
// CGO_LDFLAGS (-L<dir> -Wl,-rpath,<dir>), e.g. a build tree's
// target/release.

// #cgo LDFLAGS: -lanyfork
import "C"
