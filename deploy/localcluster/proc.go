package localcluster

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// Proc is one process of the cluster: a command with a fixed environment, ports and log file,
// which can be stopped and started again as often as a test likes. Its methods are safe for
// concurrent use. Only the process Proc started is ever signalled, by its PID, never its group.
type Proc struct {
	// Name identifies the process: "redis", "ticker1", "gw1", "haproxy". Its log is Dir/Name.log.
	Name string

	path     string
	args     []string
	env      []string
	logPath  string
	detached bool
	stdin    *os.File // nil: /dev/null

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{} // closed once the current process has been reaped
	exitErr error         // the current (or last) process's exit error, valid after done
}

func newProc(name, path string, args, env []string, logPath string, detached bool) *Proc {
	return &Proc{Name: name, path: path, args: args, env: env, logPath: logPath, detached: detached}
}

// NewProc returns a Proc the cluster does not start itself (a gateway with settings of its
// own, a ticker with a known id, the terminal client, wscat), with exactly env, logging to
// logPath. stdin, when not nil, is its standard input on every Start (the caller keeps it and
// closes it). Like the cluster's own processes it gets SIGKILL when this process dies. Call
// Start to run it.
func NewProc(name, path string, args, env []string, logPath string, stdin *os.File) *Proc {
	p := newProc(name, path, args, env, logPath, false)
	p.stdin = stdin
	return p
}

// Pid is the process id of the running (or last started) process, 0 before the first Start.
func (p *Proc) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// LogPath is the file receiving the process's stdout and stderr, appended to across restarts.
func (p *Proc) LogPath() string { return p.logPath }

// Running reports whether the process started by the last Start has not exited yet.
func (p *Proc) Running() bool {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	if done == nil {
		return false
	}
	select {
	case <-done:
		return false
	default:
		return true
	}
}

// Start starts the command again, with the same arguments, environment, ports and log file (the
// log is appended to). It fails when the process is still running.
func (p *Proc) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done != nil {
		select {
		case <-p.done:
		default:
			return fmt.Errorf("localcluster: start %s: already running as pid %d", p.Name, p.cmd.Process.Pid)
		}
	}
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("localcluster: start %s: open log: %w", p.Name, err)
	}
	fmt.Fprintf(logf, "=== localcluster: %s starting at %s\n", p.Name, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(p.path, p.args...)
	cmd.Env = p.env
	if p.stdin != nil {
		cmd.Stdin = p.stdin
	}
	cmd.Stdout = logf // an *os.File goes straight to the child: no copying goroutine, and
	cmd.Stderr = logf // a detached child keeps logging after this process exits
	cmd.SysProcAttr = sysProcAttr(p.detached)
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("localcluster: start %s: %w", p.Name, err)
	}
	logf.Close() // the child holds its own copy
	done := make(chan struct{})
	p.cmd, p.done, p.exitErr = cmd, done, nil
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		if p.cmd == cmd {
			p.exitErr = err
		}
		p.mu.Unlock()
		close(done)
	}()
	return nil
}

// current returns the running process and its done channel, or nil when none runs.
func (p *Proc) current() (*exec.Cmd, chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done == nil {
		return nil, nil
	}
	select {
	case <-p.done:
		return nil, nil
	default:
		return p.cmd, p.done
	}
}

// Kill sends SIGKILL to the process and waits until it has exited. Killing a process that is not
// running does nothing.
func (p *Proc) Kill() error {
	cmd, done := p.current()
	if cmd == nil {
		return nil
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("localcluster: kill %s (pid %d): %w", p.Name, cmd.Process.Pid, err)
	}
	<-done
	return nil
}

// Term sends SIGTERM to the process and waits for it to exit; after timeout it sends SIGKILL.
// It returns the exit error: nil when the process exited with status 0, an error saying so
// when it had to be killed. A process that is not running returns nil.
func (p *Proc) Term(timeout time.Duration) error {
	cmd, done := p.current()
	if cmd == nil {
		return nil
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("localcluster: terminate %s (pid %d): %w", p.Name, cmd.Process.Pid, err)
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-done:
		p.mu.Lock()
		err := p.exitErr
		p.mu.Unlock()
		if err != nil {
			return fmt.Errorf("localcluster: %s (pid %d) after SIGTERM: %w", p.Name, cmd.Process.Pid, err)
		}
		return nil
	case <-t.C:
		_ = cmd.Process.Signal(syscall.SIGKILL)
		<-done
		return fmt.Errorf("localcluster: %s (pid %d) still running %v after SIGTERM: killed", p.Name, cmd.Process.Pid, timeout)
	}
}

// exited returns a channel closed when the running process exits (nil when none runs).
func (p *Proc) exited() <-chan struct{} {
	_, done := p.current()
	return done
}

// ExitErr is the exit error of the last process once it has exited: nil for status 0, and nil
// while it runs.
func (p *Proc) ExitErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exitErr
}

// logTail returns the last n bytes of the process's log, for error messages.
func (p *Proc) logTail(n int) string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return ""
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
