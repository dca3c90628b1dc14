//go:build anyfork_pkgconfig

package anyfork

// With -tags anyfork_pkgconfig the flags come from `pkg-config anyfork`
// (set PKG_CONFIG_PATH to <prefix>/lib/pkgconfig for a private prefix).

// #cgo pkg-config: anyfork
import "C"
