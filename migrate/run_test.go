package migrate_test

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/vmigrate/vmigrate/internal/leakcheck"
	"github.com/vmigrate/vmigrate/migrate"
	"github.com/vmigrate/vmigrate/qmp"
	"github.com/vmigrate/vmigrate/qmp/qmptest"
)

// These tests drive migrate.Run against two fakeQEMUs: fast, no QEMU.

const incomingURI = "unix:/run/vmigrate-test/mig.sock"

func options(t *testing.T, src, dst *fakeQEMU) migrate.Options {
	return migrate.Options{
		Src: src.client, Dst: dst.client, IncomingURI: incomingURI,
		PollInterval: 10 * time.Millisecond, StartTimeout: time.Second,
		Log: zaptest.NewLogger(t),
	}
}

func runMigration(t *testing.T, o migrate.Options) (migrate.Result, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return migrate.Run(ctx, o)
}

// without returns names minus every name in drop.
func without(names []string, drop ...string) []string {
	return slices.DeleteFunc(slices.Clone(names), func(n string) bool { return slices.Contains(drop, n) })
}

func count(names []string, name string) int { return len(names) - len(without(names, name)) }

// phases returns the phases of a progress stream, each run of one phase
// counted once.
func phases(progress []migrate.Progress) []migrate.Phase {
	var out []migrate.Phase
	for _, p := range progress {
		if len(out) == 0 || out[len(out)-1] != p.Phase {
			out = append(out, p.Phase)
		}
	}
	return out
}

func passNumbers(passes []migrate.Pass) []int {
	var out []int
	for _, p := range passes {
		out = append(out, p.Pass)
	}
	return out
}

// migrateError checks that err is a *migrate.Error and returns it.
func migrateError(t *testing.T, err error) *migrate.Error {
	t.Helper()
	var me *migrate.Error
	if !errors.As(err, &me) {
		t.Fatalf("err = %v, want a *migrate.Error", err)
	}
	return me
}

func TestRunCompletes(t *testing.T) {
	for _, tc := range []struct {
		name string
		poll time.Duration
	}{
		// With polling off, every query-migrate answers an event: the
		// commands and each pass's counters are exact.
		{"events", time.Hour},
		{"events-and-polls", 5 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			leakcheck.Check(t)
			src, dst := newPair(t, recordedPlan())
			o := options(t, src, dst)
			o.PollInterval = tc.poll
			var progress []migrate.Progress
			o.Progress = func(p migrate.Progress) { progress = append(progress, p) }
			res, err := runMigration(t, o)
			if err != nil {
				t.Fatal(err)
			}

			want := migrate.Result{
				Status:  migrate.StatusCompleted,
				TotalMS: res.TotalMS, QEMUTotal: 607, SetupMS: 18, DowntimeMS: 2,
				StreamBytes: 670052, StreamBytesSource: "qemu", RAMBytes: ramTotal, RAMTransferred: 670052,
				Passes: res.Passes,
				Policy: "qemu", SourceStatus: "postmigrate", DestStatus: "running", SourceQEMU: "7.2.22", DestQEMU: "7.2.22",
				SwitchoverMS: res.SwitchoverMS,
			}
			if !reflect.DeepEqual(res, want) {
				t.Errorf("result\n got %+v\nwant %+v", res, want)
			}
			if got := passNumbers(res.Passes); !slices.Equal(got, []int{1, 2, 3, 4}) {
				t.Fatalf("passes %v, want 1 2 3 4", got)
			}
			for i := 1; i < len(res.Passes); i++ {
				if res.Passes[i].TMS < res.Passes[i-1].TMS || res.Passes[i].TransferredBytes < res.Passes[i-1].TransferredBytes {
					t.Errorf("passes out of order: %+v", res.Passes)
				}
			}
			// QEMU stopped the source between pass 3 and the final pass 4.
			if sw := res.SwitchoverMS; sw < res.Passes[2].TMS || sw > res.Passes[3].TMS || sw > res.TotalMS {
				t.Errorf("switchover at %d ms, passes %+v, total %d ms", sw, res.Passes, res.TotalMS)
			}
			wantPhases := []migrate.Phase{migrate.PhasePreflight, migrate.PhaseSetup, migrate.PhasePrecopy, migrate.PhaseSwitchover, migrate.PhaseCompleted}
			if got := phases(progress); !slices.Equal(got, wantPhases) {
				t.Errorf("progress phases %v, want %v", got, wantPhases)
			}
			if last := progress[len(progress)-1]; last.TransferredBytes != 670052 || last.TotalBytes != ramTotal {
				t.Errorf("last progress %+v", last)
			}

			// Every change in order, on each side; the fake source refuses
			// a migrate before the destination listens.
			srcCmds, dstCmds := src.fake.CommandNames(), dst.fake.CommandNames()
			wantSrc := []string{"qmp_capabilities", "query-status", "query-kvm", "migrate-set-capabilities", "migrate", "query-status"}
			wantDst := []string{"qmp_capabilities", "query-status", "migrate-set-capabilities", "migrate-incoming", "query-status"}
			if got := without(srcCmds, "query-migrate"); !slices.Equal(got, wantSrc) {
				t.Errorf("source commands %v, want %v (and query-migrate)", got, wantSrc)
			}
			if got := without(dstCmds, "query-migrate"); !slices.Equal(got, wantDst) {
				t.Errorf("destination commands %v, want %v (and query-migrate)", got, wantDst)
			}
			events := json.RawMessage(`{"capabilities":[{"capability":"events","state":true}]}`)
			for _, c := range append(src.fake.Commands(), dst.fake.Commands()...) {
				switch c.Name {
				case "migrate-set-capabilities":
					if string(c.Args) != string(events) {
						t.Errorf("%s %s, want %s", c.Name, c.Args, events)
					}
				case "migrate", "migrate-incoming":
					if string(c.Args) != `{"uri":"`+incomingURI+`"}` {
						t.Errorf("%s %s, want uri %s", c.Name, c.Args, incomingURI)
					}
				}
			}
			if tc.poll != time.Hour {
				return
			}

			wantPasses := []migrate.Pass{
				{Pass: 1, RemainingBytes: 66617344, TransferredBytes: 108735},
				{Pass: 2, RemainingBytes: 528384, TransferredBytes: 640182, DirtyPagesRate: 1020},
				{Pass: 3, RemainingBytes: 49152, TransferredBytes: 648000, DirtyPagesRate: 310},
				{Pass: 4, RemainingBytes: 16416, TransferredBytes: 653636},
			}
			got := slices.Clone(res.Passes)
			for i := range got {
				got[i].TMS = 0
			}
			if !slices.Equal(got, wantPasses) {
				t.Errorf("passes\n got %+v\nwant %+v", got, wantPasses)
			}
			q := "query-migrate"
			wantSrc = []string{"qmp_capabilities", "query-status", "query-kvm", q, "migrate-set-capabilities", "migrate", q, q, q, q, q, "query-status"}
			wantDst = []string{"qmp_capabilities", "query-status", q, "migrate-set-capabilities", "migrate-incoming", "query-status"}
			if !slices.Equal(srcCmds, wantSrc) {
				t.Errorf("source commands\n got %v\nwant %v", srcCmds, wantSrc)
			}
			if !slices.Equal(dstCmds, wantDst) {
				t.Errorf("destination commands\n got %v\nwant %v", dstCmds, wantDst)
			}
		})
	}
}

// Preflight refuses before it changes anything: none of the refusals gets
// as far as the events capability.
func TestRunPreflightRefuses(t *testing.T) {
	var (
		statusOnly = []string{"qmp_capabilities", "query-status"}
		kvmQuery   = []string{"qmp_capabilities", "query-status", "query-kvm"}
		srcQueries = []string{"qmp_capabilities", "query-status", "query-kvm", "query-migrate"}
		dstQueries = []string{"qmp_capabilities", "query-status", "query-migrate"}
	)
	for _, tc := range []struct {
		name             string
		setup            func(src, dst *fakeQEMU)
		want             error
		sourceRunning    bool
		srcCmds, dstCmds []string
	}{
		{"source-paused", func(src, dst *fakeQEMU) { src.run = qmp.RunStatePaused },
			migrate.ErrSourceNotRunning, false, statusOnly, statusOnly},
		{"source-incoming", func(src, dst *fakeQEMU) { src.run = qmp.RunStateInMigrate },
			migrate.ErrSourceNotRunning, false, statusOnly, statusOnly},
		{"destination-running", func(src, dst *fakeQEMU) { dst.run = qmp.RunStateRunning },
			migrate.ErrDestNotIncoming, true, statusOnly, statusOnly},
		{"swapped", func(src, dst *fakeQEMU) { src.run, dst.run = qmp.RunStateInMigrate, qmp.RunStateRunning },
			migrate.ErrSwapped, true, statusOnly, statusOnly},
		{"source-migrating", func(src, dst *fakeQEMU) { src.mig = precopy(2, 640182, 528384, 0, 512) },
			migrate.ErrBusy, true, srcQueries, statusOnly},
		{"destination-has-incoming", func(src, dst *fakeQEMU) { dst.mig = qmp.MigrationInfo{Status: qmp.MigrationStatusSetup} },
			migrate.ErrDestNotIncoming, true, srcQueries, dstQueries},
		{"tcg-on-7.2", func(src, dst *fakeQEMU) { src.kvm = false },
			migrate.ErrUnsafeTCG, true, kvmQuery, statusOnly},
	} {
		t.Run(tc.name, func(t *testing.T) {
			leakcheck.Check(t)
			src, dst := newPair(t, recordedPlan())
			src.set(func(src *fakeQEMU) { dst.set(func(dst *fakeQEMU) { tc.setup(src, dst) }) })
			srcBefore, dstBefore := src.status(), dst.status()

			res, err := runMigration(t, options(t, src, dst))
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			me := migrateError(t, err)
			if me.Stage != migrate.StagePreflight || me.SourceRunning != tc.sourceRunning || !strings.HasSuffix(err.Error(), "(nothing was changed)") {
				t.Errorf("stage %q, source running %v, error %q", me.Stage, me.SourceRunning, err)
			}
			if res.Status != migrate.StatusFailed || res.Stage != migrate.StagePreflight || res.Error != err.Error() || len(res.Passes) != 0 {
				t.Errorf("result %+v", res)
			}
			if got := src.fake.CommandNames(); !slices.Equal(got, tc.srcCmds) {
				t.Errorf("source commands %v, want %v", got, tc.srcCmds)
			}
			if got := dst.fake.CommandNames(); !slices.Equal(got, tc.dstCmds) {
				t.Errorf("destination commands %v, want %v", got, tc.dstCmds)
			}
			if src.status() != srcBefore || dst.status() != dstBefore {
				t.Errorf("run states %s, %s; were %s, %s", src.status(), dst.status(), srcBefore, dstBefore)
			}
		})
	}
}

// TCG dirty tracking loses writes before QEMU 9.0; KVM, a newer QEMU or
// the caller's explicit consent lets the migration go ahead.
func TestRunAcceleratorAllowed(t *testing.T) {
	for _, tc := range []struct {
		name     string
		version  qmptest.Version
		kvm      bool
		allow    bool
		queryKVM bool
	}{
		{"kvm-on-7.2", qemu72, true, false, true},
		{"tcg-on-7.2-allowed", qemu72, false, true, false},
		{"tcg-on-10.0", qemu100, false, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			leakcheck.Check(t)
			src := newFakeQEMU(t, tc.version, qmp.RunStateRunning)
			dst := newFakeQEMU(t, qemu72, qmp.RunStateInMigrate)
			src.set(func(src *fakeQEMU) { src.dst, src.plan, src.kvm = dst, recordedPlan(), tc.kvm })
			o := options(t, src, dst)
			o.AllowUnsafeTCG = tc.allow
			res, err := runMigration(t, o)
			if err != nil || res.Status != migrate.StatusCompleted {
				t.Fatalf("status %q: %v", res.Status, err)
			}
			if got := slices.Contains(src.fake.CommandNames(), "query-kvm"); got != tc.queryKVM {
				t.Errorf("query-kvm sent: %v, want %v", got, tc.queryKVM)
			}
			if res.SourceQEMU != tc.version.String() {
				t.Errorf("source QEMU %q, want %s", res.SourceQEMU, tc.version)
			}
		})
	}
}

// failedInfo is query-migrate after QEMU gave up during pass.
func failedInfo(pass int64, desc string) qmp.MigrationInfo {
	mi := precopy(pass, 640182, 528384, 1020, 560)
	mi.Status, mi.ErrorDesc = qmp.MigrationStatusFailed, desc
	return mi
}

// QEMU fails the migration during pre-copy and resumes nothing: the
// source never stopped.
func TestRunQEMUFailsInPrecopy(t *testing.T) {
	leakcheck.Check(t)
	const desc = "Unable to write to socket: Broken pipe"
	plan := append(recordedPlan()[:2], step{events: []event{statusEvent(qmp.MigrationStatusFailed)}, info: failedInfo(2, desc)})
	src, dst := newPair(t, plan)
	res, err := runMigration(t, options(t, src, dst))
	me := migrateError(t, err)
	if me.Stage != migrate.StagePrecopy || !me.SourceRunning || me.Cancelled {
		t.Errorf("stage %q, source running %v, cancelled %v", me.Stage, me.SourceRunning, me.Cancelled)
	}
	if msg := err.Error(); !strings.Contains(msg, desc) || !strings.Contains(msg, "after 2 passes") || !strings.Contains(msg, "source VM is running") {
		t.Errorf("error %q, want QEMU's reason, the pass and the source's state", msg)
	}
	if res.Status != migrate.StatusFailed || res.Stage != migrate.StagePrecopy || res.SourceStatus != "running" {
		t.Errorf("result %+v", res)
	}
	if got := passNumbers(res.Passes); !slices.Equal(got, []int{1, 2}) {
		t.Errorf("passes %v", got)
	}
	cmds := src.fake.CommandNames()
	if count(cmds, "migrate_cancel") != 0 || count(cmds, "cont") != 0 {
		t.Errorf("source commands %v: nothing to cancel or resume", cmds)
	}
}

// A source whose guest resets mid-migration (a panic under -no-reboot)
// sends SHUTDOWN before its migration fails: the error names the reason,
// which no other message of QEMU's gives.
func TestRunSourceShutdownNamed(t *testing.T) {
	leakcheck.Check(t)
	shutdown := event{qmp.EventShutdown, qmp.ShutdownEvent{Guest: true, Reason: "guest-reset"}}
	plan := append(recordedPlan()[:2], step{events: []event{shutdown, statusEvent(qmp.MigrationStatusFailed)},
		info: failedInfo(2, "Unable to write to socket: Broken pipe")})
	src, dst := newPair(t, plan)
	_, err := runMigration(t, options(t, src, dst))
	migrateError(t, err)
	if msg := err.Error(); !strings.Contains(msg, "shut down during the migration: reason guest-reset, guest-initiated true") {
		t.Errorf("error %q, want the SHUTDOWN's reason", msg)
	}
}

// A failure after QEMU stopped the source leaves it stopped (the fake
// leaves it so; QEMU itself resumes a VM that was running): Run resumes it.
func TestRunFailsAfterSwitchover(t *testing.T) {
	for _, left := range []string{qmp.RunStatePostMigrate, qmp.RunStatePaused} {
		t.Run(left, func(t *testing.T) {
			leakcheck.Check(t)
			plan := append(recordedPlan()[:4], step{events: []event{statusEvent(qmp.MigrationStatusFailed)}, run: left,
				info: failedInfo(4, "Unable to write to socket: Connection reset by peer")})
			src, dst := newPair(t, plan)
			res, err := runMigration(t, options(t, src, dst))
			me := migrateError(t, err)
			if me.Stage != migrate.StageSwitchover || !me.SourceRunning {
				t.Errorf("stage %q, source running %v: %v", me.Stage, me.SourceRunning, err)
			}
			if res.Status != migrate.StatusFailed || res.Stage != migrate.StageSwitchover || res.SourceStatus != "running" {
				t.Errorf("result %+v", res)
			}
			cmds := src.fake.CommandNames()
			if count(cmds, "cont") != 1 || count(cmds, "migrate_cancel") != 0 {
				t.Errorf("source commands %v, want one cont and no migrate_cancel", cmds)
			}
			if s := src.status(); s != qmp.RunStateRunning {
				t.Errorf("source %s", s)
			}
		})
	}
}

// The destination received everything but does not start the VM, and is
// still alive: it may yet start it, so Run must not resume the source (the
// VM would run twice). It reports the source as not running.
func TestRunDestinationStuckSourceNotResumed(t *testing.T) {
	leakcheck.Check(t)
	src, dst := newPair(t, recordedPlan())
	dst.set(func(dst *fakeQEMU) { dst.stuck = true })
	o := options(t, src, dst)
	o.StartTimeout = 200 * time.Millisecond
	res, err := runMigration(t, o)
	if !errors.Is(err, migrate.ErrDestLost) || !strings.Contains(err.Error(), "may still start it") {
		t.Fatalf("err = %v, want ErrDestLost saying the destination may still start", err)
	}
	me := migrateError(t, err)
	if me.Stage != migrate.StageAfter || me.SourceRunning {
		t.Errorf("stage %q, source running %v", me.Stage, me.SourceRunning)
	}
	if res.Status != migrate.StatusFailed || res.SourceStatus != "postmigrate" || len(res.Passes) != 4 {
		t.Errorf("result %+v", res)
	}
	if cmds := src.fake.CommandNames(); count(cmds, "cont") != 0 || count(cmds, "migrate_cancel") != 0 {
		t.Errorf("source commands %v, want no cont and no migrate_cancel", cmds)
	}
}

// The destination received everything and then exited: the source is the
// only copy left, so Run resumes it.
func TestRunDestinationDiesAfterCompletion(t *testing.T) {
	leakcheck.Check(t)
	src, dst := newPair(t, recordedPlan())
	dst.set(func(dst *fakeQEMU) { dst.stuck = true })
	o := options(t, src, dst)
	o.StartTimeout = 2 * time.Second
	o.Progress = func(p migrate.Progress) {
		if p.Phase == migrate.PhaseCompleted {
			dst.fake.Close() // QEMU exits while loading the state
		}
	}
	res, err := runMigration(t, o)
	if !errors.Is(err, migrate.ErrDestLost) {
		t.Fatalf("err = %v, want ErrDestLost", err)
	}
	me := migrateError(t, err)
	if me.Stage != migrate.StageAfter || !me.SourceRunning {
		t.Errorf("stage %q, source running %v", me.Stage, me.SourceRunning)
	}
	if res.SourceStatus != "running" {
		t.Errorf("result %+v", res)
	}
	if cmds := src.fake.CommandNames(); count(cmds, "cont") != 1 || count(cmds, "migrate_cancel") != 0 {
		t.Errorf("source commands %v, want one cont and no migrate_cancel", cmds)
	}
}

// Cancelling ctx (Ctrl-C) cancels the migration in QEMU; the source runs on.
func TestRunCancelled(t *testing.T) {
	leakcheck.Check(t)
	src, dst := newPair(t, recordedPlan()[:2]) // pre-copy that does not converge
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	o := options(t, src, dst)
	o.Progress = func(p migrate.Progress) {
		if p.Phase == migrate.PhasePrecopy && p.Pass >= 2 {
			cancel()
		}
	}
	res, err := migrate.Run(ctx, o)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	me := migrateError(t, err)
	if !me.Cancelled || !me.SourceRunning || me.Stage != migrate.StagePrecopy {
		t.Errorf("cancelled %v, source running %v, stage %q", me.Cancelled, me.SourceRunning, me.Stage)
	}
	if res.Status != migrate.StatusCancelled || res.SourceStatus != "running" {
		t.Errorf("result %+v", res)
	}
	cmds := src.fake.CommandNames()
	if count(cmds, "migrate_cancel") != 1 || count(cmds, "cont") != 0 {
		t.Errorf("source commands %v, want one migrate_cancel and no cont", cmds)
	}
	var status string
	src.set(func(src *fakeQEMU) { status = src.mig.Status })
	if status != qmp.MigrationStatusCancelled {
		t.Errorf("source migration %s, want cancelled (Run waits for the cancel to take effect)", status)
	}
}

// A QMP error reply keeps its class and description through *migrate.Error.
func TestRunCommandError(t *testing.T) {
	for _, tc := range []struct {
		cmd    string
		onDest bool
		err    qmptest.Error
	}{
		{"migrate-incoming", true, qmptest.Error{Class: qmp.ClassGenericError, Desc: "Failed to bind socket: Address already in use"}},
		{"migrate-set-parameters", false, qmptest.Error{Class: qmp.ClassGenericError, Desc: "Parameter 'downtime_limit' expects an integer in the range of 0 to 2000000 milliseconds"}},
		{"migrate", false, qmptest.Error{Class: qmp.ClassGenericError, Desc: "Failed to connect socket: Connection refused"}},
	} {
		t.Run(tc.cmd, func(t *testing.T) {
			leakcheck.Check(t)
			src, dst := newPair(t, recordedPlan())
			side := src
			if tc.onDest {
				side = dst
			}
			side.set(func(q *fakeQEMU) { q.errs[tc.cmd] = &tc.err })
			o := options(t, src, dst)
			limit := uint64(100)
			o.Parameters = &qmp.MigrationParameters{DowntimeLimit: &limit}
			res, err := runMigration(t, o)

			var qe *qmp.Error
			if !errors.As(err, &qe) || qe.Command != tc.cmd || qe.Class != tc.err.Class || qe.Desc != tc.err.Desc {
				t.Fatalf("err = %v, want the %s error %+v", err, tc.cmd, tc.err)
			}
			if msg := err.Error(); !strings.Contains(msg, tc.err.Class+": "+tc.err.Desc) {
				t.Errorf("error %q does not keep class and description", msg)
			}
			me := migrateError(t, err)
			if me.Stage != migrate.StagePrecopy || !me.SourceRunning || res.Status != migrate.StatusFailed || res.SourceStatus != "running" {
				t.Errorf("stage %q, source running %v, result %+v", me.Stage, me.SourceRunning, res)
			}
			cmds := src.fake.CommandNames()
			if count(cmds, "cont") != 0 || count(cmds, "migrate_cancel") != 0 {
				t.Errorf("source commands %v", cmds)
			}
			if tc.cmd != "migrate" && count(cmds, "migrate") != 0 {
				t.Errorf("source commands %v: migrate after a failed %s", cmds, tc.cmd)
			}
		})
	}
}

// A destination told to listen on port 0 chooses a port; the source is
// sent to the port the destination reports in query-migrate.
func TestRunListeningPort(t *testing.T) {
	for _, tc := range []struct {
		incoming, want string
		query          bool
	}{
		{"tcp:127.0.0.1:0", "tcp:127.0.0.1:" + listenPort, true},
		{"tcp:[::1]:0", "tcp:[::1]:" + listenPort, true},
		{"tcp:127.0.0.1:4444", "tcp:127.0.0.1:4444", false},
	} {
		t.Run(tc.incoming, func(t *testing.T) {
			leakcheck.Check(t)
			src, dst := newPair(t, recordedPlan())
			o := options(t, src, dst)
			o.IncomingURI = tc.incoming
			if _, err := runMigration(t, o); err != nil {
				t.Fatal(err)
			}
			i := slices.IndexFunc(src.fake.Commands(), func(c qmptest.Command) bool { return c.Name == "migrate" })
			if got := uriOf(src.fake.Commands()[i].Args); got != tc.want {
				t.Errorf("source sent to %s, want %s", got, tc.want)
			}
			dstCmds := dst.fake.CommandNames()
			i = slices.Index(dstCmds, "migrate-incoming")
			if queried := dstCmds[i+1] == "query-migrate"; queried != tc.query {
				t.Errorf("destination commands %v: query-migrate after migrate-incoming %v, want %v", dstCmds, queried, tc.query)
			}
		})
	}
}

// QEMU may end a migration between two polls. The poll's answer then says
// "completed" or "failed" while the events QEMU sent before that answer
// (the last passes, STOP) still wait in Run's queue; they count all the
// same.
func TestRunPollSeesTheEnd(t *testing.T) {
	whole := []event{passEvent(1), statusEvent(qmp.MigrationStatusActive), passEvent(2), stopEvent, passEvent(3)}
	for _, tc := range []struct {
		name  string
		last  step
		stage string // "" for success
	}{
		{"completed", step{events: []event{statusEvent(qmp.MigrationStatusCompleted)}, run: qmp.RunStatePostMigrate, info: completedInfo}, ""},
		{"failed", step{events: []event{statusEvent(qmp.MigrationStatusFailed)}, run: qmp.RunStatePostMigrate,
			info: failedInfo(3, "Unable to write to socket: Broken pipe")}, migrate.StageSwitchover},
	} {
		t.Run(tc.name, func(t *testing.T) {
			leakcheck.Check(t)
			last := tc.last
			last.events = append(slices.Clone(whole), last.events...)
			src, dst := newPair(t, []step{
				{info: qmp.MigrationInfo{Status: qmp.MigrationStatusSetup}}, // migrate: setup only
				last, // the first poll: the whole migration, then the answer
			})
			src.set(func(src *fakeQEMU) { src.eager = true })
			o := options(t, src, dst)
			var progress []migrate.Progress
			o.Progress = func(p migrate.Progress) { progress = append(progress, p) }
			res, err := runMigration(t, o)
			if tc.stage == "" && err != nil {
				t.Fatal(err)
			}
			if tc.stage != "" && res.Stage != tc.stage {
				t.Errorf("stage %q, want %q: %v", res.Stage, tc.stage, err)
			}
			if got := passNumbers(res.Passes); !slices.Equal(got, []int{1, 2, 3}) {
				t.Errorf("passes %v, want 1 2 3", got)
			}
			if !slices.Contains(phases(progress), migrate.PhaseSwitchover) {
				t.Errorf("progress phases %v: STOP was missed", phases(progress))
			}
			if s := src.status(); tc.stage != "" && s != qmp.RunStateRunning {
				t.Errorf("source %s after the failure", s)
			}
		})
	}
}
