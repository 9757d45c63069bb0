//go:build !linux

package localpg

import "syscall"

// sysProcAttr runs the postmaster in its own process group (so a Ctrl-C
// reaches triggerd, which stops it in order) as cred.
func sysProcAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Credential: cred}
}

// killAll kills the postmaster's process group. Backends lead groups of
// their own and exit once they notice the postmaster's death.
func killAll(pid int) error {
	return syscall.Kill(-pid, syscall.SIGKILL)
}
