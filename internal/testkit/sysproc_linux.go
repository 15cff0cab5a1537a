package testkit

import "syscall"

// sysProcAttr makes the kernel kill a started server if the test binary dies without cleanup
// (a panic or a -timeout), so no redis-server outlives its test.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
