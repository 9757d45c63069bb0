package localpg

import "syscall"

// sysProcAttr runs the postmaster in its own process group (so a Ctrl-C
// reaches triggerd, which stops it in order) as cred, and has the kernel
// stop it if triggerd dies.
func sysProcAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Credential: cred, Pdeathsig: syscall.SIGQUIT}
}
