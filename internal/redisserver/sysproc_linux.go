package redisserver

import "syscall"

// sysProcAttr makes the kernel kill a started server if the program that started it dies
// without cleanup (a panic, a test's -timeout, kill -9), so no redis-server outlives it.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
