package localpg

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// sysProcAttr runs the postmaster in its own process group (so a Ctrl-C
// reaches triggerd, which stops it in order) as cred, and has the kernel
// stop it if triggerd dies.
func sysProcAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Credential: cred, Pdeathsig: syscall.SIGQUIT}
}

// killAll kills the postmaster pid and every process it started, and
// waits until they are gone. Each backend leads a process group of its
// own, so killing the postmaster's group leaves them running until they
// notice its death, and one busy with a query may still commit it: the
// postmaster is stopped first, so that it starts no more, and its
// children are found by their parent.
func killAll(pid int) error {
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		return err
	}
	kids := children(pid)
	for _, k := range kids {
		_ = syscall.Kill(k, syscall.SIGKILL) // one may have exited meanwhile
	}
	if err := syscall.Kill(-pid, syscall.SIGKILL); err != nil {
		return err
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		alive := false
		for _, k := range kids {
			alive = alive || !errors.Is(syscall.Kill(k, 0), syscall.ESRCH) && !zombie(k)
		}
		if !alive {
			return nil
		}
	}
	return errors.New("the server's processes did not exit within 10s of SIGKILL")
}

// children lists the processes whose parent is pid, from /proc.
func children(pid int) []int {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	var out []int
	for _, path := range stats {
		data, err := os.ReadFile(path)
		if err != nil {
			continue // exited since the listing
		}
		// pid (comm) state ppid ...: comm may hold spaces and parentheses.
		end := bytes.LastIndexByte(data, ')')
		fields := bytes.Fields(data[end+1:])
		if len(fields) < 2 {
			continue
		}
		if ppid, err := strconv.Atoi(string(fields[1])); err == nil && ppid == pid {
			if p, err := strconv.Atoi(filepath.Base(filepath.Dir(path))); err == nil {
				out = append(out, p)
			}
		}
	}
	return out
}

// zombie reports whether pid has exited and waits to be reaped.
func zombie(pid int) bool {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	end := bytes.LastIndexByte(data, ')')
	fields := bytes.Fields(data[end+1:])
	return len(fields) > 0 && string(fields[0]) == "Z"
}
