//go:build !unix

package filewatch

import "io/fs"

// fileID would tell a folder from any other; this platform does not say.
type fileID struct{}

// identity cannot tell a file's identity on this platform.
func identity(fs.FileInfo) (fileID, bool) { return fileID{}, false }
