// Package termclient is the terminal client of the gateway: it prints every frame it receives as
// a readable line and sends each line typed on standard input, reconnecting the way
// docs/PROTOCOL.md asks (1001 drains after the server's retry_ms, drops with backoff).
//
// Entry point: Run, which the client command calls with the process's arguments and streams.
package termclient

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"

	"golang.org/x/term"
)

// DefaultURL is where a gateway listens when started with its defaults.
const DefaultURL = "ws://localhost:8080/ws"

// Run runs the client until standard input ends (after waiting up to 2 s for answers to
// requests already sent), ctx is canceled, or the server ends the session for good (1000, 1008,
// 1009, an HTTP 4xx on the handshake, or a first connection that fails). args are the
// command-line arguments without the program name: -url, -user, -token and -token-cmd. `-h`
// prints the usage to stderr and returns nil.
//
// With a token, a 4001 (the token expired) ends the session with a message saying so, unless
// -token-cmd can get a new one: then the client renews the token in-band before it expires
// (refresh) and, should it expire anyway, reconnects with a fresh one.
//
// When stdin and stdout are both terminals, Run puts the terminal in raw mode (restored before
// it returns) and edits the input line itself, so a tick arriving while a line is being typed
// is printed above the prompt instead of through the typed text; Ctrl-C and Ctrl-D end the
// input. Otherwise lines are read plainly and frames printed without a prompt, with the
// client's own status lines on stderr.
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) (err error) {
	fs := flag.NewFlagSet("client", flag.ContinueOnError)
	fs.SetOutput(stderr)
	rawURL := fs.String("url", DefaultURL, "gateway WebSocket `URL`")
	user := fs.String("user", "", "display `name` (letters, digits, _ . -); empty: the gateway assigns a guest name, kept across reconnects")
	token := fs.String("token", "", "bearer `JWT` for a gateway with authentication on, sent as Authorization: Bearer (default $WSGW_TOKEN)")
	tokenCmd := fs.String("token-cmd", "", "shell `command` printing a fresh token, run for the first token when -token is empty and to refresh it before it expires,\ne.g. \"gateway token -user ana\"")
	if help, err := parseFlags(fs, args, "client [-url "+DefaultURL+"] [-user NAME] [-token JWT | -token-cmd COMMAND]",
		"Prints every frame the gateway sends and sends each line typed (10 asks for F(10)).",
		"quit, exit, Ctrl-D or Ctrl-C end it."); help || err != nil {
		return err
	}
	u, err := url.Parse(*rawURL)
	if err != nil {
		return fmt.Errorf("client: parse -url: %w", err)
	}
	if u.Scheme != "ws" && u.Scheme != "wss" {
		return fmt.Errorf("client: -url %q: scheme must be ws or wss", *rawURL)
	}

	out, next, restore, err := setupIO(stdin, stdout, stderr)
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}
	defer restore()

	s := newSession(u, *user, out, next)
	s.tokens = &tokens{token: *token, cmd: *tokenCmd}
	if *token == "" && *tokenCmd != "" {
		if _, err := s.tokens.fetch(ctx); err != nil {
			return fmt.Errorf("client: %w", err)
		}
	}
	go s.input(ctx)
	if err := s.loop(ctx); err != nil {
		return fmt.Errorf("client: %w", err)
	}
	return nil
}

// setupIO picks terminal or plain mode. next reads one line; restore undoes raw mode and must be
// called before anything else is printed to stderr (main prints Run's error there).
func setupIO(stdin io.Reader, stdout, stderr io.Writer) (out *printer, next func() (string, error), restore func(), err error) {
	inFile, inOK := stdin.(*os.File)
	outFile, outOK := stdout.(*os.File)
	if !inOK || !outOK || !term.IsTerminal(int(inFile.Fd())) || !term.IsTerminal(int(outFile.Fd())) {
		// A terminal stdin with redirected stdout stays plain too: escape sequences and
		// prompts have no place in a file.
		sc := bufio.NewScanner(stdin)
		sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
		next = func() (string, error) {
			if sc.Scan() {
				return sc.Text(), nil
			}
			if err := sc.Err(); err != nil {
				return "", err
			}
			return "", io.EOF
		}
		return &printer{out: stdout, status: stderr}, next, func() {}, nil
	}

	fd := int(inFile.Fd())
	state, err := term.MakeRaw(fd)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("put terminal in raw mode: %w", err)
	}
	t := term.NewTerminal(struct {
		io.Reader
		io.Writer
	}{stdin, stdout}, "> ")
	if w, h, err := term.GetSize(int(outFile.Fd())); err == nil {
		_ = t.SetSize(w, h) // only affects wrapping of long input lines
	}
	out = &printer{out: t, status: t}
	restore = func() {
		out.mu.Lock()
		defer out.mu.Unlock()
		_, _ = io.WriteString(stdout, "\r\n") // leave the shell prompt on a fresh line
		_ = term.Restore(fd, state)
	}
	return out, t.ReadLine, restore, nil
}

// parseFlags parses args into fs and sets its usage: "usage: " and synopsis, the about lines,
// then the flags. help reports that -h printed the usage (not an error); a positional argument
// prints it and fails. Errors start with the flag set's name ("client", "client users").
func parseFlags(fs *flag.FlagSet, args []string, synopsis string, about ...string) (help bool, err error) {
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: %s\n\n", synopsis)
		for _, line := range about {
			fmt.Fprintln(fs.Output(), line)
		}
		fmt.Fprintln(fs.Output())
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return true, nil
		}
		return false, fmt.Errorf("%s: %w", fs.Name(), err)
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return false, fmt.Errorf("%s: unexpected argument %q", fs.Name(), fs.Arg(0))
	}
	return false, nil
}
