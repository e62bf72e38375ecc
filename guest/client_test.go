package guest_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmigrate/vmigrate/guest"
	"github.com/vmigrate/vmigrate/guest/agentapi"
	"github.com/vmigrate/vmigrate/guest/workload"
)

type sliceMemory struct{}

func (sliceMemory) Alloc(n int64) ([]byte, error) { return make([]byte, n), nil }
func (sliceMemory) Free([]byte) error             { return nil }

func newAgent(t *testing.T) *guest.Client {
	t.Helper()
	s := &agentapi.Server{BootID: "id-1", Booted: time.Now(), MemTotal: 256 << 20, Memory: sliceMemory{}}
	hs := httptest.NewServer(s.Handler())
	t.Cleanup(func() { hs.Close(); s.Close() })
	return &guest.Client{HTTP: hs.Client(), Addr: strings.TrimPrefix(hs.URL, "http://")}
}

func TestClient(t *testing.T) {
	ctx := context.Background()
	c := newAgent(t)
	if seq, err := c.Ping(ctx); err != nil || seq != 1 {
		t.Errorf("Ping = %d, %v", seq, err)
	}
	if page, err := c.Index(ctx); err != nil || !strings.Contains(string(page), "<html") {
		t.Errorf("Index: %v", err)
	}
	st, err := c.Status(ctx)
	if err != nil || st.BootID != "id-1" || st.Workload.Name != workload.Idle {
		t.Errorf("Status = %+v, %v", st, err)
	}
	if _, err := c.Verify(ctx); !errors.Is(err, workload.ErrNotPopulated) {
		t.Errorf("Verify while idle = %v, want ErrNotPopulated", err)
	}

	ws, err := c.SetWorkload(ctx, workload.Config{Name: workload.MemDirty, WSSBytes: 1 << 20})
	if err != nil || ws.WSSBytes != 1<<20 || ws.PagesPerSec != workload.DefaultPagesPerSec {
		t.Fatalf("SetWorkload = %+v, %v", ws, err)
	}
	for {
		r, err := c.Verify(ctx)
		if errors.Is(err, workload.ErrNotPopulated) {
			time.Sleep(5 * time.Millisecond)
			continue
		}
		if err != nil || r.PagesChecked != 256 || r.PagesWrong != 0 || r.FirstWrong != -1 {
			t.Errorf("Verify = %+v, %v", r, err)
		}
		break
	}

	_, err = c.SetWorkload(ctx, workload.Config{Name: workload.MemDirty, BytesPerPage: 5000})
	var se *guest.StatusError
	if !errors.As(err, &se) || se.Code != http.StatusBadRequest || !strings.Contains(se.Body, "bytes_per_page") {
		t.Errorf("bad SetWorkload = %v", err)
	}
}

func TestClientUnreachable(t *testing.T) {
	hs := httptest.NewServer(http.NotFoundHandler())
	addr := strings.TrimPrefix(hs.URL, "http://")
	hs.Close()
	c := &guest.Client{Addr: addr}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Status(ctx); err == nil || !strings.HasPrefix(err.Error(), "guest status: ") {
		t.Errorf("Status of a closed port = %v", err)
	}
}

func TestKernelArgs(t *testing.T) {
	tests := []struct {
		w    workload.Config
		want string
	}{
		{workload.Config{}, "console=ttyS0 loglevel=4 panic=-1 vmigrate.ip=10.0.2.15/24 vmigrate.workload=idle"},
		{workload.Config{Name: workload.MemDirty, WSSBytes: 256 << 20, PagesPerSec: 5000, BytesPerPage: 8, HotFraction: 0.1, HotWeight: 0.9},
			"console=ttyS0 loglevel=4 panic=-1 vmigrate.ip=10.0.2.15/24 vmigrate.workload=memdirty vmigrate.wss=256M vmigrate.rate=5000 vmigrate.bpp=8 vmigrate.hot=0.1:0.9"},
	}
	for _, tt := range tests {
		got := guest.KernelArgs("10.0.2.15", 24, tt.w)
		if got != tt.want {
			t.Errorf("KernelArgs(%+v)\n = %q\nwant %q", tt.w, got, tt.want)
		}
		// The guest reads back what the host wrote.
		n, err := agentapi.ParseNet(got)
		if err != nil || n.Addr.String() != "10.0.2.15/24" {
			t.Errorf("ParseNet(%q) = %+v, %v", got, n, err)
		}
		want := tt.w
		if want.Name == "" {
			want.Name = workload.Idle
		}
		if w, err := workload.ParseCmdline(got); err != nil || w != want {
			t.Errorf("ParseCmdline(%q) = %+v, %v; want %+v", got, w, err, want)
		}
	}
}

func TestFindNotBuilt(t *testing.T) {
	// Without apt on PATH the kernel package is taken from the cache, so the
	// test does not depend on the host's apt lists.
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command")
	}
	bin, cache := t.TempDir(), t.TempDir()
	if err := os.Symlink(goBin, filepath.Join(bin, "go")); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin)
	os.MkdirAll(filepath.Join(cache, "debs"), 0o755)
	os.WriteFile(filepath.Join(cache, "debs", "linux-image-6.1.0-99-amd64_6.1.999-1_amd64.deb"), nil, 0o644)
	_, err = guest.Find(context.Background(), guest.BuildOptions{CacheDir: cache})
	if !errors.Is(err, guest.ErrNotBuilt) || !strings.Contains(err.Error(), "vmigrate guest build") {
		t.Errorf("Find in an empty cache = %v, want ErrNotBuilt", err)
	}
}
