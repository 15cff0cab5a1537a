//go:build unix && !linux

package localcluster

import "syscall"

// sysProcAttr: see sysproc_linux.go. Without Pdeathsig, an attached process can outlive a test
// binary that dies without cleanup.
func sysProcAttr(detached bool) *syscall.SysProcAttr {
	if detached {
		return &syscall.SysProcAttr{Setsid: true}
	}
	return &syscall.SysProcAttr{Setpgid: true}
}
