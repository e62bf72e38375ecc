package scenarios

import (
	"context"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/vmigrate/vmigrate/guest/workload"
	"github.com/vmigrate/vmigrate/lab/labtest"
	"github.com/vmigrate/vmigrate/migrate"
)

// The demo end to end on a smaller guest than its default, so the suite
// stays quick: the lab comes up, the guest moves under load, answers at
// its address from the destination with the same boot, and every page is
// intact.
func TestDemo(t *testing.T) {
	cfg := labtest.Config(t, 256<<20, workload.Config{})
	w := workload.Config{Name: workload.MemDirty, WSSBytes: 80 << 20}.WithDefaults(256 << 20)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	res, err := Demo(ctx, DemoOptions{
		Image: cfg.Image, MemBytes: 256 << 20, Workload: w, Accel: cfg.Accel,
		CacheDir: cfg.CacheDir, Log: zaptest.NewLogger(t),
	})
	if err != nil {
		t.Fatalf("demo: %v (result %+v)", err, res)
	}
	if res.Status != migrate.StatusCompleted || !res.Verified || !res.SameAddress || !res.SameBoot {
		t.Fatalf("result %+v", res)
	}
	if want := int64(80 << 20 / 4096); res.PagesChecked != want || res.PagesWrong != 0 {
		t.Errorf("pages checked %d wrong %d, want %d and 0", res.PagesChecked, res.PagesWrong, want)
	}
	// The prober saw the switchover: a gap at least as long as QEMU's own
	// downtime (the guest cannot answer while stopped), and answers after.
	if res.Probe == nil || res.Probe.Answered == 0 || res.ObservedDowntimeMS < res.DowntimeMS {
		t.Errorf("observed downtime %d ms, QEMU %d ms, probe %+v", res.ObservedDowntimeMS, res.DowntimeMS, res.Probe)
	}
	if res.Accel != cfg.Accel || res.BootMS <= 0 || res.AchievedDirtyPPS <= 0 {
		t.Errorf("accel %q boot %d ms dirty %.0f pages/s", res.Accel, res.BootMS, res.AchievedDirtyPPS)
	}
}
