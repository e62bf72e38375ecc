package qmp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vmigrate/vmigrate/qmp/qmptest"
)

// These tests replay testdata/*.jsonl, recorded from QEMU 7.2 by TestRecord,
// and check what the client makes of what QEMU really said.

// replay connects a Client to a Peer replaying testdata/name. When the test
// ends it checks that a Recorder on the client's side saw the same lines as
// the transcript: recording a replay reproduces the recording.
func replay(t *testing.T, name string) *Client {
	t.Helper()
	tr, err := qmptest.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	rec := qmptest.NewRecorder(qmptest.Serve(t, tr))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := NewClient(ctx, rec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		got := rec.Transcript()
		for _, dir := range []string{qmptest.ServerToClient, qmptest.ClientToServer} {
			if !sameJSON(t, got.Lines(dir), tr.Lines(dir)) {
				t.Errorf("%s: re-recorded %s lines differ from the transcript:\n got %s\nwant %s", name, dir, got.Lines(dir), tr.Lines(dir))
			}
		}
	})
	return c
}

func sameJSON(t *testing.T, a, b []json.RawMessage) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		var x, y any
		if json.Unmarshal(a[i], &x) != nil || json.Unmarshal(b[i], &y) != nil || !reflect.DeepEqual(x, y) {
			t.Logf("line %d: %s != %s", i, a[i], b[i])
			return false
		}
	}
	return true
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func migrationStatuses(evs []Event) []string {
	var out []string
	for _, ev := range evs {
		if m, err := ev.Migration(); err == nil {
			out = append(out, m.Status)
		}
	}
	return out
}

func eventNames(evs []Event) []string {
	var out []string
	for _, ev := range evs {
		out = append(out, ev.Name)
	}
	return out
}

func TestReplayStatusRunning(t *testing.T) {
	c := replay(t, "status-running.jsonl")
	if v := c.Version(); v.Major != 7 || v.Minor != 2 || !strings.Contains(v.Package, "7.2") {
		t.Errorf("Version() = %+v, want 7.2.x", v)
	}
	r, err := scenarioStatusRunning(testCtx(t), c)
	if err != nil {
		t.Fatal(err)
	}
	want := statusRunResult{
		Before: StatusInfo{RunStateRunning, true},
		Paused: StatusInfo{RunStatePaused, false},
		After:  StatusInfo{RunStateRunning, true},
	}
	if r.Before != want.Before || r.Paused != want.Paused || r.After != want.After {
		t.Errorf("statuses = %+v %+v %+v, want %+v %+v %+v", r.Before, r.Paused, r.After, want.Before, want.Paused, want.After)
	}
	if got := eventNames(r.Events); !reflect.DeepEqual(got, []string{EventStop, EventResume}) {
		t.Errorf("events = %v, want [STOP RESUME]", got)
	}
	for i, ev := range r.Events {
		if ev.Seq != uint64(i+1) || ev.Time.IsZero() {
			t.Errorf("event %d: Seq %d Time %v", i, ev.Seq, ev.Time)
		}
	}
}

func TestReplayStatusIncoming(t *testing.T) {
	c := replay(t, "status-incoming.jsonl")
	s, k, err := scenarioStatusIncoming(testCtx(t), c)
	if err != nil {
		t.Fatal(err)
	}
	if s != (StatusInfo{Status: RunStateInMigrate, Running: false}) {
		t.Errorf("query-status = %+v, want inmigrate, not running", s)
	}
	if k.Enabled {
		t.Errorf("query-kvm = %+v, want KVM not enabled (recorded under TCG)", k)
	}
}

func TestReplayErrors(t *testing.T) {
	c := replay(t, "errors.jsonl")
	r, err := scenarioErrors(testCtx(t), c)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		err  error
		want Error
	}{
		{r.Incoming, Error{"migrate-incoming", ClassGenericError, "'-incoming' was not specified on the command line"}},
		{r.Unknown, Error{"x-vmigrate-no-such-command", ClassCommandNotFound, "The command x-vmigrate-no-such-command has not been found"}},
	} {
		var qe *Error
		if !errors.As(tc.err, &qe) {
			t.Errorf("error %v (%T) is not a *qmp.Error", tc.err, tc.err)
			continue
		}
		if *qe != tc.want {
			t.Errorf("error = %+v, want %+v", *qe, tc.want)
		}
	}
	if got, want := r.Incoming.Error(), "qmp migrate-incoming: GenericError: '-incoming' was not specified on the command line"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if r.After.Status != RunStateRunning {
		t.Errorf("query-status after errors = %+v", r.After)
	}
}

func TestReplayQuit(t *testing.T) {
	c := replay(t, "quit.jsonl")
	r, err := scenarioQuit(testCtx(t), c)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Events) != 1 || r.Events[0].Name != EventShutdown || !bytes.Contains(r.Events[0].Data, []byte("host-qmp-quit")) {
		t.Errorf("events after quit = %+v, want SHUTDOWN host-qmp-quit", r.Events)
	}
	if !errors.Is(r.Err, ErrClosed) {
		t.Errorf("NextEvent after QEMU closed = %v, want ErrClosed", r.Err)
	}
}

func TestReplayMigrate(t *testing.T) {
	src := replay(t, "migrate-src.jsonl")
	dst := replay(t, "migrate-dst.jsonl")
	r, err := scenarioMigrate(testCtx(t), src, dst, migrateURI, 0)
	if err != nil {
		t.Fatal(err)
	}
	if r.DstBefore.Status != RunStateInMigrate {
		t.Errorf("dst before = %+v", r.DstBefore)
	}
	p := r.Params
	if p.DowntimeLimit == nil || *p.DowntimeLimit != 100 || p.MaxBandwidth == nil || *p.MaxBandwidth != 1<<20 {
		t.Errorf("parameters not as set: %+v", p)
	}
	if p.MultifdChannels == nil || p.AnnounceRounds == nil || p.XBZRLECacheSize == nil || p.AvailSwitchoverBandwidth != nil {
		t.Errorf("parameters from 7.2: %+v (want multifd-channels, announce-rounds, xbzrle-cache-size; no avail-switchover-bandwidth)", p)
	}
	var events bool
	for _, c := range r.Caps {
		if c.Name == CapabilityEvents {
			events = c.State
		}
	}
	if !events || len(r.Caps) < 10 {
		t.Errorf("capabilities = %+v, want events on", r.Caps)
	}

	if n := len(r.Polls); n < 3 || r.Polls[0].Status != MigrationStatusSetup || r.Polls[n-1].Status != MigrationStatusCompleted {
		t.Errorf("polls: %d, first %q, last %q; want setup ... completed", n, r.Polls[0].Status, r.Polls[n-1].Status)
	}
	var active int
	for _, info := range r.Polls {
		if info.Status != MigrationStatusActive {
			continue
		}
		active++
		if info.RAM == nil || info.RAM.Total < 64<<20 || info.RAM.Transferred == 0 || info.RAM.PageSize != 4096 || info.ExpectedDowntime == nil || info.TotalTime == nil {
			t.Errorf("active poll: %+v ram %+v", info, info.RAM)
		}
	}
	if active < 3 {
		t.Errorf("%d polls saw the migration active, want several", active)
	}
	f := r.Final
	if f.Status != MigrationStatusCompleted || f.Downtime == nil || f.RAM == nil || f.RAM.Remaining != 0 || f.RAM.Transferred == 0 || f.RAM.DirtySyncCount < 2 {
		t.Errorf("final query-migrate = %+v ram %+v", f, f.RAM)
	}

	if got := migrationStatuses(r.SrcEvents); !reflect.DeepEqual(got, []string{"setup", "active", "completed"}) {
		t.Errorf("src MIGRATION statuses = %v", got)
	}
	var passes []int
	stopBeforeCompleted := false
	for _, ev := range r.SrcEvents {
		switch ev.Name {
		case EventMigrationPass:
			mp, err := ev.MigrationPass()
			if err != nil {
				t.Fatal(err)
			}
			passes = append(passes, mp.Pass)
		case EventStop:
			stopBeforeCompleted = true
		}
	}
	for i, p := range passes {
		if p != i+1 {
			t.Errorf("MIGRATION_PASS passes = %v, want 1, 2, ...", passes)
			break
		}
	}
	if len(passes) < 2 || !stopBeforeCompleted {
		t.Errorf("src events %v: want several passes and STOP before completed", eventNames(r.SrcEvents))
	}
	if got := migrationStatuses(r.DstEvents); !reflect.DeepEqual(got, []string{"setup", "active", "completed"}) {
		t.Errorf("dst MIGRATION statuses = %v", got)
	}
	if r.SrcAfter.Status != RunStatePostMigrate || r.DstAfter.Status != RunStateRunning || !r.DstAfter.Running {
		t.Errorf("after: src %+v dst %+v", r.SrcAfter, r.DstAfter)
	}
}

func TestReplayCancel(t *testing.T) {
	c := replay(t, "cancel.jsonl")
	r, err := scenarioCancel(testCtx(t), c, cancelURI, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := migrationStatuses(r.Events); !reflect.DeepEqual(got, []string{"setup", "active", "cancelling", "cancelled"}) {
		t.Errorf("MIGRATION statuses = %v", got)
	}
	var polled []string
	for _, info := range r.Polls {
		polled = append(polled, info.Status)
	}
	if !reflect.DeepEqual(polled, []string{"setup", "active", "cancelling", "cancelled"}) {
		t.Errorf("polled statuses = %v", polled)
	}
	if r.After.Status != RunStateRunning {
		t.Errorf("after cancel: %+v", r.After)
	}
}
