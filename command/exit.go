package command

import (
	"errors"

	"github.com/vmigrate/vmigrate/migrate"
)

// Exit codes of vmigrate. Scripts rely on them; they are listed in
// README.md and docs/cli.md and never renumbered.
const (
	ExitOK = 0
	// ExitFailed: the migration failed; the source VM runs, unchanged.
	ExitFailed = 1
	// ExitUsage: bad flags or input, or a precondition failed before
	// anything was changed (no such socket, destination not incoming...).
	ExitUsage = 2
	// ExitCancelled: interrupted (Ctrl-C, SIGTERM); the source VM runs.
	ExitCancelled = 3
	// ExitSourceUnknown: the migration failed and the source VM could not
	// be confirmed running. Look at it.
	ExitSourceUnknown = 4
	// ExitVerify: the VM moved, but the demo's checks on the guest failed
	// (it did not answer at its address, or /verify found wrong pages).
	ExitVerify = 5
)

// codeError carries an exit code with an error.
type codeError struct {
	code int
	err  error
}

func (e *codeError) Error() string { return e.err.Error() }
func (e *codeError) Unwrap() error { return e.err }

func withCode(code int, err error) error {
	if err == nil {
		return nil
	}
	return &codeError{code: code, err: err}
}

// exitCode maps an error to the process exit code.
func exitCode(err error) int {
	if err == nil {
		return ExitOK
	}
	var ce *codeError
	if errors.As(err, &ce) {
		return ce.code
	}
	var me *migrate.Error
	if errors.As(err, &me) {
		switch {
		case me.Stage == migrate.StagePreflight && !me.Cancelled:
			return ExitUsage
		case !me.SourceRunning && me.Stage != migrate.StagePreflight:
			return ExitSourceUnknown
		case me.Cancelled:
			return ExitCancelled
		default:
			return ExitFailed
		}
	}
	return ExitFailed
}
