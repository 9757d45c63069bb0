//go:build !unix

package filewatch

import "os"

// hashOpenFlags opens a file to hash it; this platform has no flags to
// refuse a symlink or a FIFO that took the file's place.
const hashOpenFlags = os.O_RDONLY
