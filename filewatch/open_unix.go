//go:build unix

package filewatch

import (
	"os"
	"syscall"
)

// hashOpenFlags opens a file to hash it without following a symlink or
// blocking on a FIFO that took the file's place since it settled.
const hashOpenFlags = os.O_RDONLY | syscall.O_NONBLOCK | syscall.O_NOFOLLOW
