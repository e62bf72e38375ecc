package qmp

// Scenarios are the conversations recorded from real QEMU (TestRecord),
// replayed against qmptest.Peer (replay_test.go) and run against real QEMU
// (TestRealQEMU). Their control flow depends only on what QEMU replies, never
// on timing, so a replay takes the same path as the recording. poll is the
// pause between query-migrate polls: real QEMU needs one, a replay does not.

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// migrateURI is the migration address used in recordings; replays must send
// the same string. Only TestRecord creates anything there.
const (
	recordDir  = "/tmp/vmigrate-qmp-rec"
	migrateURI = "unix:" + recordDir + "/mig.sock"
	cancelURI  = "exec:cat >/dev/null"
)

func u64(v uint64) *uint64 { return &v }

// collect reads events from *cur until one matches, returning all of them.
func collect(ctx context.Context, c *Client, cur *Cursor, match func(Event) bool) ([]Event, error) {
	var evs []Event
	for {
		ev, err := c.NextEvent(ctx, cur)
		if err != nil {
			return evs, err
		}
		evs = append(evs, ev)
		if match(ev) {
			return evs, nil
		}
	}
}

func isEvent(name string) func(Event) bool { return func(ev Event) bool { return ev.Name == name } }

type statusRunResult struct {
	Before, Paused, After StatusInfo
	Events                []Event
}

// scenarioStatusRunning: query-status, stop, cont on a running VM.
func scenarioStatusRunning(ctx context.Context, c *Client) (r statusRunResult, err error) {
	cur := c.Cursor()
	if r.Before, err = c.QueryStatus(ctx); err != nil {
		return r, err
	}
	if err = c.Stop(ctx); err != nil {
		return r, err
	}
	if r.Paused, err = c.QueryStatus(ctx); err != nil {
		return r, err
	}
	if err = c.Cont(ctx); err != nil {
		return r, err
	}
	if r.After, err = c.QueryStatus(ctx); err != nil {
		return r, err
	}
	r.Events, err = collect(ctx, c, &cur, isEvent(EventResume))
	return r, err
}

// scenarioStatusIncoming: query-status and query-kvm on a VM waiting for a
// migration (recorded under TCG).
func scenarioStatusIncoming(ctx context.Context, c *Client) (StatusInfo, KVMInfo, error) {
	s, err := c.QueryStatus(ctx)
	if err != nil {
		return s, KVMInfo{}, err
	}
	k, err := c.QueryKVM(ctx)
	return s, k, err
}

type errorsResult struct {
	Incoming, Unknown error
	After             StatusInfo
}

// scenarioErrors: two failing commands, then proof the connection survives.
func scenarioErrors(ctx context.Context, c *Client) (r errorsResult, err error) {
	r.Incoming = c.MigrateIncoming(ctx, migrateURI)
	r.Unknown = c.Execute(ctx, "x-vmigrate-no-such-command", nil, nil)
	r.After, err = c.QueryStatus(ctx)
	return r, err
}

type quitResult struct {
	Events []Event
	Err    error // the terminal error after QEMU closed the connection
}

// scenarioQuit: quit, the SHUTDOWN event, and the connection closing.
func scenarioQuit(ctx context.Context, c *Client) (r quitResult, err error) {
	cur := c.Cursor()
	if err := c.Quit(ctx); err != nil {
		return r, err
	}
	if r.Events, err = collect(ctx, c, &cur, isEvent(EventShutdown)); err != nil {
		return r, err
	}
	select {
	case <-c.Done():
	case <-ctx.Done():
		return r, ctx.Err()
	}
	_, r.Err = c.NextEvent(ctx, &cur)
	return r, nil
}

type migrateResult struct {
	DstBefore            StatusInfo
	Params               MigrationParameters
	Caps                 []Capability
	Polls                []MigrationInfo
	Final                MigrationInfo
	SrcEvents, DstEvents []Event
	SrcAfter, DstAfter   StatusInfo
}

// scenarioMigrate migrates src to dst over uri with the events capability
// on, polling query-migrate until the migration finishes.
func scenarioMigrate(ctx context.Context, src, dst *Client, uri string, poll time.Duration) (r migrateResult, err error) {
	step := func(name string, err error) error {
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		return nil
	}
	if r.DstBefore, err = dst.QueryStatus(ctx); err != nil {
		return r, step("dst query-status", err)
	}
	events := Capability{Name: CapabilityEvents, State: true}
	if err = dst.MigrateSetCapabilities(ctx, events); err != nil {
		return r, step("dst caps", err)
	}
	if err = src.MigrateSetCapabilities(ctx, events); err != nil {
		return r, step("src caps", err)
	}
	// Slow enough for a few polls while active, fast enough for a test.
	if err = src.MigrateSetParameters(ctx, MigrationParameters{MaxBandwidth: u64(1 << 20), DowntimeLimit: u64(100)}); err != nil {
		return r, step("src set parameters", err)
	}
	if r.Params, err = src.QueryMigrateParameters(ctx); err != nil {
		return r, step("src query parameters", err)
	}
	if r.Caps, err = src.QueryMigrateCapabilities(ctx); err != nil {
		return r, step("src query capabilities", err)
	}
	dcur, scur := dst.Cursor(), src.Cursor()
	if err = dst.MigrateIncoming(ctx, uri); err != nil {
		return r, step("dst migrate-incoming", err)
	}
	if err = src.Migrate(ctx, uri); err != nil {
		return r, step("src migrate", err)
	}
	for {
		info, err := src.QueryMigrate(ctx)
		if err != nil {
			return r, step("src query-migrate", err)
		}
		r.Polls = append(r.Polls, info)
		if MigrationFinished(info.Status) {
			break
		}
		if len(r.Polls) > 1000 {
			return r, errors.New("migration did not finish after 1000 polls")
		}
		time.Sleep(poll)
	}
	if r.SrcEvents, err = collect(ctx, src, &scur, IsMigration(MigrationStatusCompleted, MigrationStatusFailed)); err != nil {
		return r, step("src events", err)
	}
	if r.DstEvents, err = collect(ctx, dst, &dcur, resumedAndFinished()); err != nil {
		return r, step("dst events", err)
	}
	if r.Final, err = src.QueryMigrate(ctx); err != nil {
		return r, step("src final query-migrate", err)
	}
	if r.SrcAfter, err = src.QueryStatus(ctx); err != nil {
		return r, step("src query-status", err)
	}
	if r.DstAfter, err = dst.QueryStatus(ctx); err != nil {
		return r, step("dst query-status", err)
	}
	return r, nil
}

type cancelResult struct {
	Polls  []MigrationInfo
	Events []Event
	After  StatusInfo
}

// scenarioCancel starts a bandwidth-starved migration and cancels it once
// it is active.
func scenarioCancel(ctx context.Context, c *Client, uri string, poll time.Duration) (r cancelResult, err error) {
	if err = c.MigrateSetCapabilities(ctx, Capability{Name: CapabilityEvents, State: true}); err != nil {
		return r, err
	}
	if err = c.MigrateSetParameters(ctx, MigrationParameters{MaxBandwidth: u64(64 << 10)}); err != nil {
		return r, err
	}
	cur := c.Cursor()
	if err = c.Migrate(ctx, uri); err != nil {
		return r, err
	}
	cancelled := false
	for {
		info, err := c.QueryMigrate(ctx)
		if err != nil {
			return r, err
		}
		r.Polls = append(r.Polls, info)
		if MigrationFinished(info.Status) {
			break
		}
		if info.Status == MigrationStatusActive && !cancelled {
			if err := c.MigrateCancel(ctx); err != nil {
				return r, err
			}
			cancelled = true
			continue
		}
		if len(r.Polls) > 1000 {
			return r, errors.New("migration did not finish after 1000 polls")
		}
		time.Sleep(poll)
	}
	if r.Events, err = collect(ctx, c, &cur, IsMigration(MigrationStatusCancelled, MigrationStatusCompleted, MigrationStatusFailed)); err != nil {
		return r, err
	}
	r.After, err = c.QueryStatus(ctx)
	return r, err
}

// resumedAndFinished matches once both RESUME and a final MIGRATION status
// were seen, in either order (QEMU 7.2 sends RESUME first).
func resumedAndFinished() func(Event) bool {
	var resumed, finished bool
	return func(ev Event) bool {
		resumed = resumed || ev.Name == EventResume
		finished = finished || IsMigration(MigrationStatusCompleted, MigrationStatusFailed)(ev)
		return resumed && finished
	}
}
