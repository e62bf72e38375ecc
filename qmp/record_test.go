package qmp

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vmigrate/vmigrate/qmp/qmptest"
)

// recordCommand re-records testdata/*.jsonl from the installed QEMU.
const recordCommand = "VMIGRATE_RECORD=1 go test ./qmp -run TestRecord -v"

// TestRecord records the transcripts in testdata from real QEMU. It runs only
// with VMIGRATE_RECORD=1 and overwrites the files.
func TestRecord(t *testing.T) {
	if os.Getenv("VMIGRATE_RECORD") != "1" {
		t.Skip("set VMIGRATE_RECORD=1 to re-record testdata from real QEMU: " + recordCommand)
	}
	bin := requireQEMU(t)
	os.RemoveAll(recordDir)
	if err := os.MkdirAll(recordDir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(recordDir) })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	dial := func(vm *testVM, what string) (*Client, *qmptest.Recorder) {
		t.Helper()
		conn, err := net.Dial("unix", vm.Sock)
		if err != nil {
			t.Fatal(err)
		}
		rec := qmptest.NewRecorder(conn)
		rec.Note(what + "; recorded by: " + recordCommand)
		c, err := NewClient(ctx, rec)
		if err != nil {
			t.Fatal(err)
		}
		return c, rec
	}
	save := func(c *Client, rec *qmptest.Recorder, name string) {
		t.Helper()
		c.Close()
		tr := rec.Transcript()
		tr = append(tr[:1:1], append(qmptest.Transcript{{Note: "QEMU " + c.Version().String() + " (" + c.Version().Package + ")"}}, tr[1:]...)...)
		if err := tr.WriteFile(filepath.Join("testdata", name)); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote testdata/%s (%d entries)", name, len(tr))
	}

	running := startQEMU(t, bin, recordDir, "run", false)
	incoming := startQEMU(t, bin, recordDir, "in", true)
	src := startQEMU(t, bin, recordDir, "src", false)
	dst := startQEMU(t, bin, recordDir, "dst", true)
	cancelVM := startQEMU(t, bin, recordDir, "cancel", false)

	c, rec := dial(running, "query-status, stop, cont on a running VM")
	if _, err := scenarioStatusRunning(ctx, c); err != nil {
		t.Fatal(err)
	}
	save(c, rec, "status-running.jsonl")

	c, rec = dial(running, "error replies: migrate-incoming without -incoming, unknown command")
	if _, err := scenarioErrors(ctx, c); err != nil {
		t.Fatal(err)
	}
	save(c, rec, "errors.jsonl")

	c, rec = dial(incoming, "query-status on a VM started with -incoming defer")
	if _, _, err := scenarioStatusIncoming(ctx, c); err != nil {
		t.Fatal(err)
	}
	save(c, rec, "status-incoming.jsonl")

	sc, srec := dial(src, "migration source: unix socket, events capability, query-migrate polls")
	dc, drec := dial(dst, "migration destination (-incoming defer) of migrate-src.jsonl")
	if _, err := scenarioMigrate(ctx, sc, dc, migrateURI, 50*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	save(sc, srec, "migrate-src.jsonl")
	save(dc, drec, "migrate-dst.jsonl")

	c, rec = dial(cancelVM, "migrate_cancel of a bandwidth-limited migration to "+cancelURI)
	if _, err := scenarioCancel(ctx, c, cancelURI, 50*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	save(c, rec, "cancel.jsonl")

	c, rec = dial(running, "quit: reply, SHUTDOWN event, connection closed")
	if qr, err := scenarioQuit(ctx, c); err != nil {
		t.Fatal(err)
	} else {
		t.Logf("after quit: %v", qr.Err)
	}
	save(c, rec, "quit.jsonl")
}
