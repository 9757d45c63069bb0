//go:build unix

package filewatch

import (
	"io/fs"
	"syscall"
)

// fileID tells a folder from any other on the machine.
type fileID struct{ dev, ino uint64 }

// identity returns the identity of the file fi describes.
func identity(fi fs.FileInfo) (fileID, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{}, false
	}
	return fileID{uint64(st.Dev), uint64(st.Ino)}, true //nolint:unconvert // Dev and Ino are not uint64 on every platform
}
