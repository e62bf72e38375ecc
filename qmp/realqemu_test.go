package qmp

import (
	"context"
	"testing"
	"time"
)

// TestRealQEMU migrates an empty 64 MiB VM between two real QEMUs through
// Dial, waiting for the outcome with WaitEvent. It skips without
// qemu-system-x86_64, or fails if VMIGRATE_REQUIRE_QEMU=1.
func TestRealQEMU(t *testing.T) {
	bin := requireQEMU(t)
	dir := shortTempDir(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	srcVM := startQEMU(t, bin, dir, "src", false)
	dstVM := startQEMU(t, bin, dir, "dst", true)
	src, err := Dial(ctx, srcVM.Sock)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := Dial(ctx, "unix:"+dstVM.Sock)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	if v := src.Version(); v.Major < 7 {
		t.Errorf("QEMU version %v, want 7 or later", v)
	}
	if s, err := src.QueryStatus(ctx); err != nil || s.Status != RunStateRunning {
		t.Fatalf("src query-status = %+v, %v", s, err)
	}

	events := Capability{Name: CapabilityEvents, State: true}
	for _, c := range []*Client{src, dst} {
		if err := c.MigrateSetCapabilities(ctx, events); err != nil {
			t.Fatal(err)
		}
	}
	uri := "unix:" + dir + "/mig.sock"
	cur, dcur := src.Cursor(), dst.Cursor()
	if err := dst.MigrateIncoming(ctx, uri); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := src.Migrate(ctx, uri); err != nil {
		t.Fatal(err)
	}
	ev, err := src.WaitEvent(ctx, &cur, IsMigration(MigrationStatusCompleted, MigrationStatusFailed, MigrationStatusCancelled))
	if err != nil {
		t.Fatal(err)
	}
	if m, _ := ev.Migration(); m.Status != MigrationStatusCompleted {
		info, _ := src.QueryMigrate(ctx)
		t.Fatalf("migration %s: %s", m.Status, info.ErrorDesc)
	}
	if _, err := dst.WaitEvent(ctx, &dcur, func(ev Event) bool { return ev.Name == EventResume }); err != nil {
		t.Fatal(err)
	}
	info, err := src.QueryMigrate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Status != MigrationStatusCompleted || info.RAM == nil || info.RAM.Total == 0 || info.Downtime == nil {
		t.Errorf("query-migrate after completion = %+v", info)
	}
	if s, err := dst.QueryStatus(ctx); err != nil || !s.Running {
		t.Errorf("dst query-status = %+v, %v", s, err)
	}
	t.Logf("migrated in %v (QEMU total-time %dms, downtime %dms, %d bytes)", time.Since(start).Round(time.Millisecond), *info.TotalTime, *info.Downtime, info.RAM.Transferred)

	if err := src.Quit(ctx); err != nil {
		t.Errorf("quit: %v", err)
	}
}

// TestRealQEMUScenarios runs the recorded migration and cancel scenarios
// against the installed QEMU, so a QEMU whose behaviour drifted from
// testdata is noticed without re-recording.
func TestRealQEMUScenarios(t *testing.T) {
	bin := requireQEMU(t)
	dir := shortTempDir(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dial := func(vm *testVM) *Client {
		c, err := Dial(ctx, vm.Sock)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	src := dial(startQEMU(t, bin, dir, "src", false))
	dst := dial(startQEMU(t, bin, dir, "dst", true))
	other := dial(startQEMU(t, bin, dir, "cancel", false))

	m, err := scenarioMigrate(ctx, src, dst, "unix:"+dir+"/mig.sock", 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if got := migrationStatuses(m.SrcEvents); len(got) == 0 || got[len(got)-1] != MigrationStatusCompleted {
		t.Errorf("src MIGRATION statuses = %v", got)
	}
	if m.SrcAfter.Status != RunStatePostMigrate || !m.DstAfter.Running {
		t.Errorf("after migration: src %+v dst %+v", m.SrcAfter, m.DstAfter)
	}
	c, err := scenarioCancel(ctx, other, cancelURI, 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if got := migrationStatuses(c.Events); len(got) == 0 || got[len(got)-1] != MigrationStatusCancelled {
		t.Errorf("cancel MIGRATION statuses = %v", got)
	}
	if c.After.Status != RunStateRunning {
		t.Errorf("after cancel: %+v", c.After)
	}
}
