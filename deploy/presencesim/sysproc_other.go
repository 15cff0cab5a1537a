//go:build !linux

package main

import "syscall"

// sysProcAttr has nothing to add outside Linux: a crashed run may leave its server behind.
func sysProcAttr() *syscall.SysProcAttr { return nil }
