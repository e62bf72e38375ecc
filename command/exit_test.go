package command

import (
	"errors"
	"fmt"
	"testing"

	"github.com/vmigrate/vmigrate/migrate"
)

func TestExitCode(t *testing.T) {
	tests := []struct {
		err  error
		want int
	}{
		{nil, ExitOK},
		{errors.New("boom"), ExitFailed},
		{withCode(ExitUsage, errors.New("--mem")), ExitUsage},
		{fmt.Errorf("wrapped: %w", withCode(ExitVerify, errors.New("pages"))), ExitVerify},
		{&migrate.Error{Stage: migrate.StagePreflight, SourceRunning: true, Err: migrate.ErrDestNotIncoming}, ExitUsage},
		{&migrate.Error{Stage: migrate.StagePreflight, Cancelled: true, SourceRunning: true, Err: errors.New("x")}, ExitCancelled},
		{&migrate.Error{Stage: migrate.StagePrecopy, SourceRunning: true, Err: errors.New("x")}, ExitFailed},
		{&migrate.Error{Stage: migrate.StagePrecopy, SourceRunning: true, Cancelled: true, Err: errors.New("x")}, ExitCancelled},
		{&migrate.Error{Stage: migrate.StageSwitchover, SourceRunning: false, Err: errors.New("x")}, ExitSourceUnknown},
		{&migrate.Error{Stage: migrate.StageAfter, SourceRunning: false, Cancelled: true, Err: errors.New("x")}, ExitSourceUnknown},
	}
	for _, tc := range tests {
		if got := exitCode(tc.err); got != tc.want {
			t.Errorf("exitCode(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
}
