// Package command is vmigrate's command line: flags, wiring of the
// packages that do the work, output, and exit codes. It is the one place
// where the parts are put together; main only supplies a context.
package command

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"sync"

	"github.com/urfave/cli/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// env carries what every command needs.
type env struct {
	ctx    context.Context
	stdout io.Writer
	stderr io.Writer
	log    *zap.Logger

	stopProfile func() // set by --cpu-profile
}

func getEnv(c *cli.Context) *env { return c.App.Metadata["env"].(*env) }

// Main runs vmigrate with args and returns the exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	stderr = &syncWriter{w: stderr} // the logger, progress and errors share it from many goroutines
	e := &env{ctx: ctx, stdout: stdout, stderr: stderr, log: zap.NewNop()}
	app := &cli.App{
		Name:      "vmigrate",
		Usage:     "live-migrate QEMU/KVM virtual machines over slow and distant links",
		Writer:    stdout,
		ErrWriter: stderr,
		Metadata:  map[string]any{"env": e},
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "log-level", Value: "info", Usage: "debug, info, warn or error (logs go to stderr)"},
			&cli.StringFlag{Name: "cpu-profile", Hidden: true, Usage: "write a Go CPU profile of this run to FILE (for performance work)"},
			&cli.StringFlag{Name: "cache-dir", EnvVars: []string{"VMIGRATE_CACHE"}, Usage: "where the guest image and probe results are kept (default $XDG_CACHE_HOME/vmigrate or ~/.cache/vmigrate)"},
		},
		Before: func(c *cli.Context) error {
			lvl, err := zapcore.ParseLevel(c.String("log-level"))
			if err != nil {
				return withCode(ExitUsage, fmt.Errorf("--log-level: %w", err))
			}
			e.log = newLogger(stderr, lvl)
			if p := c.String("cpu-profile"); p != "" {
				f, err := os.Create(p)
				if err != nil {
					return withCode(ExitUsage, fmt.Errorf("--cpu-profile: %w", err))
				}
				if err := pprof.StartCPUProfile(f); err != nil {
					f.Close()
					return withCode(ExitUsage, fmt.Errorf("--cpu-profile: %w", err))
				}
				e.stopProfile = func() { pprof.StopCPUProfile(); f.Close() }
			}
			return nil
		},
		Commands: []*cli.Command{
			runCommand(),
			demoCommand(),
			labCommand(),
			guestCommand(),
			wanlinkCommand(),
			tunnelCommand(),
			diskCommand(),
			indexCommand(),
			scenarioCommand(),
			benchCommand(),
			loadgenCommand(),
		},
		ExitErrHandler: func(*cli.Context, error) {}, // Main maps errors to codes
	}
	err := app.RunContext(ctx, args)
	if e.stopProfile != nil {
		e.stopProfile()
	}
	if err == nil {
		return ExitOK
	}
	code := exitCode(err)
	var ce *codeError
	if !errors.As(err, &ce) && isUsageError(err) {
		code = ExitUsage
	}
	fmt.Fprintf(stderr, "vmigrate: %v\n", err)
	return code
}

// isUsageError recognises urfave/cli's own complaints about flags.
func isUsageError(err error) bool {
	var ue interface{ ExitCode() int }
	if errors.As(err, &ue) {
		return false
	}
	s := err.Error()
	for _, p := range []string{"flag provided but not defined", "Required flag", "invalid value", "flag needs an argument", "No help topic"} {
		if strings.Contains(s, p) {
			return true
		}
	}
	return false
}

// syncWriter serializes writes to w.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func newLogger(w io.Writer, lvl zapcore.Level) *zap.Logger {
	cfg := zap.NewDevelopmentEncoderConfig()
	cfg.TimeKey = ""
	cfg.CallerKey = ""
	core := zapcore.NewCore(zapcore.NewConsoleEncoder(cfg), zapcore.AddSync(w), lvl)
	return zap.New(core)
}

// cacheDir resolves the cache directory: the flag, then the XDG rule.
func cacheDir(c *cli.Context) string {
	if d := c.String("cache-dir"); d != "" {
		return d
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "vmigrate")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".cache", "vmigrate")
	}
	return filepath.Join(os.TempDir(), "vmigrate-cache")
}
