package main

import "syscall"

// sysProcAttr makes the kernel kill a redis-server this program started if the program dies
// without cleaning up (a panic, kill -9), so no server outlives the run.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
