package localcluster

import "syscall"

// sysProcAttr puts each process in its own process group, so a Ctrl-C on the terminal running
// the tests reaches only the test binary, which then stops the cluster in order. Attached
// processes also get SIGKILL when the test binary dies without cleanup (a panic, -timeout), so
// none outlives its test; detached ones (deploy/cluster up) start a new session instead and
// outlive the command that started them.
func sysProcAttr(detached bool) *syscall.SysProcAttr {
	if detached {
		return &syscall.SysProcAttr{Setsid: true}
	}
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
