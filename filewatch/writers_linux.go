package filewatch

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// openForWriting reports whether some process has the file name open for
// writing, and whether the kernel could tell. It asks for a read lease,
// which Linux refuses (EAGAIN) on a file open for writing, and gives it
// back at once. Leases need the file's owner or CAP_LEASE, and a file
// system that has them; elsewhere the answer is unknown.
func openForWriting(name string) (open, known bool) {
	f, err := os.Open(name)
	if err != nil {
		return false, false
	}
	defer f.Close()
	raw, err := f.SyscallConn()
	if err != nil {
		return false, false
	}
	var leaseErr error
	if err := raw.Control(func(fd uintptr) {
		if _, leaseErr = unix.FcntlInt(fd, unix.F_SETLEASE, unix.F_RDLCK); leaseErr == nil {
			_, _ = unix.FcntlInt(fd, unix.F_SETLEASE, unix.F_UNLCK)
		}
	}); err != nil {
		return false, false
	}
	switch {
	case leaseErr == nil:
		return false, true
	case errors.Is(leaseErr, unix.EAGAIN):
		return true, true
	default:
		return false, false
	}
}
