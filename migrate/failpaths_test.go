package migrate_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vmigrate/vmigrate/internal/leakcheck"
	"github.com/vmigrate/vmigrate/migrate"
	"github.com/vmigrate/vmigrate/qmp"
	"github.com/vmigrate/vmigrate/stopcopy"
)

// Regression tests for the failure paths of Run: what it does to the
// source when the migration ends badly at or after the switchover.

// deviceInfo is query-migrate while QEMU copies device state, the source
// stopped.
func deviceInfo() qmp.MigrationInfo {
	mi := precopy(2, 653636, 16416, 0, 600)
	mi.Status = qmp.MigrationStatusDevice
	return mi
}

// switchoverPlan stops the source at pass 2 and stays in "device" for pad
// more queries before it completes.
func switchoverPlan(pad int) []step {
	plan := []step{
		{events: []event{passEvent(1), statusEvent(qmp.MigrationStatusActive)}, info: precopy(1, 108735, 66617344, 0, 52)},
		{events: []event{stopEvent, passEvent(2), statusEvent(qmp.MigrationStatusDevice)}, run: qmp.RunStateFinishMigrate, info: deviceInfo()},
	}
	for range pad {
		plan = append(plan, step{info: deviceInfo()})
	}
	return append(plan, step{events: []event{statusEvent(qmp.MigrationStatusCompleted)}, run: qmp.RunStatePostMigrate, info: completedInfo})
}

// onFirstSwitchover calls f the first time Run reports the switchover.
func onFirstSwitchover(f func()) func(migrate.Progress) {
	done := false
	return func(p migrate.Progress) {
		if !done && p.Phase == migrate.PhaseSwitchover {
			done = true
			f()
		}
	}
}

// Ctrl-C during the switchover: the cancel comes too late and QEMU
// completes. fail must judge by the status after the cancel (completed),
// not by the "device" it read before it: the destination, alive and
// loading, holds the VM, so the source is not resumed.
func TestFailCancelTooLateSourceCompletes(t *testing.T) {
	leakcheck.Check(t)
	src, dst := newPair(t, switchoverPlan(3))
	src.set(func(src *fakeQEMU) { src.ignoreCancel = true })
	dst.set(func(dst *fakeQEMU) { dst.stuck = true }) // stays "inmigrate"
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	o := options(t, src, dst)
	o.Progress = onFirstSwitchover(cancel)
	res, err := migrate.Run(ctx, o)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	me := migrateError(t, err)
	if !me.Cancelled || me.SourceRunning || me.VMOnDest || me.Stage != migrate.StageSwitchover {
		t.Errorf("cancelled %v, source running %v, VM on dest %v, stage %q", me.Cancelled, me.SourceRunning, me.VMOnDest, me.Stage)
	}
	if msg := err.Error(); !strings.Contains(msg, "may still start it") || !strings.Contains(msg, "status completed") {
		t.Errorf("error %q, want: the destination may still start it, source migration completed", msg)
	}
	cmds := src.fake.CommandNames()
	if count(cmds, "migrate_cancel") != 1 {
		t.Errorf("source commands %v: want one migrate_cancel (fail must have seen the migration under way)", cmds)
	}
	if count(cmds, "cont") != 0 || count(cmds, "stop") != 0 {
		t.Errorf("source commands %v: want no cont (the VM would run twice)", cmds)
	}
	if s := src.status(); s != qmp.RunStatePostMigrate || res.SourceStatus != qmp.RunStatePostMigrate {
		t.Errorf("source %s, result source status %q, want postmigrate", s, res.SourceStatus)
	}
	if s := dst.status(); s != qmp.RunStateInMigrate {
		t.Errorf("destination %s", s)
	}
}

// query-migrate fails on the source during the switchover, so fail cannot
// learn the migration's status: unknown counts as completed, and the
// source, which may have handed the VM over, is not resumed while the
// destination is alive.
func TestFailSourceStatusUnknown(t *testing.T) {
	leakcheck.Check(t)
	src, dst := newPair(t, switchoverPlan(3))
	dst.set(func(dst *fakeQEMU) { dst.stuck = true })
	o := options(t, src, dst)
	o.Progress = onFirstSwitchover(func() {
		src.set(func(src *fakeQEMU) {
			src.errs["query-migrate"] = genericError("State blocked by non-migratable device")
		})
	})
	res, err := runMigration(t, o)
	me := migrateError(t, err)
	if me.SourceRunning || me.VMOnDest || me.Cancelled || me.Stage != migrate.StageSwitchover {
		t.Errorf("source running %v, VM on dest %v, cancelled %v, stage %q: %v", me.SourceRunning, me.VMOnDest, me.Cancelled, me.Stage, err)
	}
	if msg := err.Error(); !strings.Contains(msg, "query-migrate") || !strings.Contains(msg, "may still start it") || !strings.Contains(msg, "status unknown") {
		t.Errorf("error %q, want the query-migrate failure and: the destination may still start it (status unknown)", msg)
	}
	cmds := src.fake.CommandNames()
	if count(cmds, "cont") != 0 || count(cmds, "migrate_cancel") != 0 {
		t.Errorf("source commands %v: want no cont and no migrate_cancel", cmds)
	}
	if s := src.status(); s != qmp.RunStateFinishMigrate || res.SourceStatus != qmp.RunStateFinishMigrate {
		t.Errorf("source %s, result source status %q, want finish-migrate", s, res.SourceStatus)
	}
}

// The destination's monitor breaks QMP after the completion: the
// connection is gone but that says nothing about the process, which may
// still start the VM. Unlike a local monitor that closes (QEMU exited,
// TestRunDestinationDiesAfterCompletion), this does not resume the source.
func TestFailDestinationProtocolErrorAfterCompletion(t *testing.T) {
	leakcheck.Check(t)
	src, dst := newPair(t, recordedPlan())
	dst.set(func(dst *fakeQEMU) { dst.stuck = true })
	if !dst.client.Local() {
		t.Fatal("the fake's monitor is not a unix socket: the local case is untested")
	}
	o := options(t, src, dst)
	o.StartTimeout = 2 * time.Second
	o.Progress = func(p migrate.Progress) {
		if p.Phase == migrate.PhaseCompleted {
			// A message without "event", "return" or "error".
			dst.fake.Event("", nil)
		}
	}
	res, err := runMigration(t, o)
	if !errors.Is(err, migrate.ErrDestLost) {
		t.Fatalf("err = %v, want ErrDestLost", err)
	}
	if cerr := dst.client.Err(); !errors.Is(cerr, qmp.ErrProtocol) {
		t.Fatalf("destination client error %v, want a protocol error", cerr)
	}
	me := migrateError(t, err)
	if me.Stage != migrate.StageAfter || me.SourceRunning || me.VMOnDest {
		t.Errorf("stage %q, source running %v, VM on dest %v", me.Stage, me.SourceRunning, me.VMOnDest)
	}
	if !strings.Contains(err.Error(), "may still start it") {
		t.Errorf("error %q, want: the destination may still start it", err)
	}
	if cmds := src.fake.CommandNames(); count(cmds, "cont") != 0 || count(cmds, "migrate_cancel") != 0 {
		t.Errorf("source commands %v, want no cont and no migrate_cancel", cmds)
	}
	if res.SourceStatus != qmp.RunStatePostMigrate {
		t.Errorf("result %+v", res)
	}
}

// QEMU completes but leaves the source running while the destination runs
// too: Run stops the source and reports the VM on the destination.
func TestFailSourceRunsAfterCompletion(t *testing.T) {
	leakcheck.Check(t)
	plan := recordedPlan()
	plan[len(plan)-1].run = qmp.RunStateRunning
	src, dst := newPair(t, plan)
	res, err := runMigration(t, options(t, src, dst))
	me := migrateError(t, err)
	if me.Stage != migrate.StageAfter || !me.VMOnDest || me.SourceRunning {
		t.Errorf("stage %q, VM on dest %v, source running %v: %v", me.Stage, me.VMOnDest, me.SourceRunning, err)
	}
	if msg := err.Error(); !strings.Contains(msg, "runs on the destination") || !strings.Contains(msg, "was stopped") {
		t.Errorf("error %q, want: the VM runs on the destination, the source was stopped", msg)
	}
	cmds := src.fake.CommandNames()
	if count(cmds, "stop") != 1 || count(cmds, "cont") != 0 || count(cmds, "migrate_cancel") != 0 {
		t.Errorf("source commands %v, want one stop, no cont, no migrate_cancel", cmds)
	}
	if s := src.status(); s != qmp.RunStatePaused || res.SourceStatus != qmp.RunStatePaused {
		t.Errorf("source %s, result source status %q, want paused", s, res.SourceStatus)
	}
	if s := dst.status(); s != qmp.RunStateRunning {
		t.Errorf("destination %s", s)
	}
}

// abortsBetween aborts whenever it is asked between passes (History.Now
// set), never right after a pass.
type abortsBetween struct{}

func (abortsBetween) Name() string { return "aborts-between" }
func (abortsBetween) Decide(h stopcopy.History) stopcopy.Decision {
	if h.Now != (stopcopy.Reading{}) {
		return stopcopy.Decision{Action: stopcopy.Abort, Rule: "test", Reason: "asked between passes"}
	}
	return stopcopy.Decision{Action: stopcopy.Continue, Rule: "test", Reason: "after a pass"}
}

// A poll that shows the migration completed does not consult the stop
// policy: there is nothing left to decide.
func TestPolicyNotAskedOnCompletedPoll(t *testing.T) {
	leakcheck.Check(t)
	src, dst := newPair(t, []step{
		{events: []event{passEvent(1), statusEvent(qmp.MigrationStatusActive)}, info: precopy(1, 108735, 66617344, 0, 52)},
		{info: precopy(1, 400000, 300000, 0, 300)}, // read after pass 1
		{events: []event{statusEvent(qmp.MigrationStatusCompleted)}, run: qmp.RunStatePostMigrate, info: completedInfo}, // the next poll
	})
	src.set(func(src *fakeQEMU) { src.eager = true })
	o := options(t, src, dst)
	o.Policy = abortsBetween{}
	res, err := runMigration(t, o)
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != migrate.StatusCompleted || res.Decision != nil {
		t.Errorf("status %q, decision %+v", res.Status, res.Decision)
	}
	if cmds := src.fake.CommandNames(); count(cmds, "migrate_cancel") != 0 {
		t.Errorf("source commands %v", cmds)
	}
}

// The whole migration happens between two polls (as in
// TestRunPollSeesTheEnd): the first poll already says completed. A budget
// that is spent at once must not abort a migration that has completed.
func TestBudgetIgnoresCompletedMigration(t *testing.T) {
	leakcheck.Check(t)
	src, dst := newPair(t, []step{
		{info: qmp.MigrationInfo{Status: qmp.MigrationStatusSetup}},
		{events: []event{passEvent(1), statusEvent(qmp.MigrationStatusActive), passEvent(2), stopEvent, passEvent(3),
			statusEvent(qmp.MigrationStatusCompleted)}, run: qmp.RunStatePostMigrate, info: completedInfo},
	})
	src.set(func(src *fakeQEMU) { src.eager = true })
	o := options(t, src, dst)
	o.Policy = stopcopy.Budget{Inner: stopcopy.QEMU{}, MaxTime: time.Nanosecond, OnBreach: stopcopy.Abort}
	res, err := runMigration(t, o)
	if err != nil {
		t.Fatalf("%v (decision %+v)", err, res.Decision)
	}
	if res.Status != migrate.StatusCompleted || res.Decision != nil {
		t.Errorf("status %q, decision %+v", res.Status, res.Decision)
	}
}

// A stop policy holds QEMU with a 1 ms downtime limit; when setting it
// fails, the user's limit is put back all the same.
func TestPolicyHoldFailsRestoresDowntime(t *testing.T) {
	leakcheck.Check(t)
	src, dst := newPair(t, recordedPlan())
	src.set(func(src *fakeQEMU) {
		src.downtime = 250
		src.errsOnce["migrate-set-parameters"] = genericError("Migration is disabled")
	})
	o := options(t, src, dst)
	o.Policy = stopcopy.Smart{}
	res, err := runMigration(t, o)
	if err == nil || !strings.Contains(err.Error(), "hold pre-copy") {
		t.Fatalf("err = %v, want the failed hold", err)
	}
	me := migrateError(t, err)
	if me.Stage != migrate.StagePrecopy || !me.SourceRunning || res.SourceStatus != qmp.RunStateRunning {
		t.Errorf("stage %q, source running %v, result %+v", me.Stage, me.SourceRunning, res)
	}
	var sets []string
	for _, c := range src.fake.Commands() {
		if c.Name == "migrate-set-parameters" {
			sets = append(sets, string(c.Args))
		}
	}
	want := []string{`{"downtime-limit":1}`, `{"downtime-limit":250}`}
	if !slices.Equal(sets, want) {
		t.Errorf("migrate-set-parameters %v, want %v (the hold, then the restore)", sets, want)
	}
	var downtime uint64
	src.set(func(src *fakeQEMU) { downtime = src.downtime })
	if downtime != 250 {
		t.Errorf("downtime-limit %d, want 250", downtime)
	}
	if cmds := src.fake.CommandNames(); count(cmds, "migrate") != 0 {
		t.Errorf("source commands %v: migrate after a failed hold", cmds)
	}
}
