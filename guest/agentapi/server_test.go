package agentapi_test

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmigrate/vmigrate/guest/agentapi"
	"github.com/vmigrate/vmigrate/guest/workload"
)

// heapMemory hands out Go slices and counts what is live.
type heapMemory struct {
	mu   sync.Mutex
	live int64
}

func (m *heapMemory) Alloc(n int64) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.live += n
	return make([]byte, n), nil
}

func (m *heapMemory) Free(b []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.live -= int64(len(b))
	return nil
}

func (m *heapMemory) Live() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.live
}

func newServer(t *testing.T, mem agentapi.Allocator) (*agentapi.Server, *httptest.Server) {
	t.Helper()
	s := &agentapi.Server{BootID: "b00t", Booted: time.Now(), MemTotal: 512 << 20, Memory: mem, Logf: t.Logf}
	hs := httptest.NewServer(s.Handler())
	t.Cleanup(func() {
		hs.Close()
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s, hs
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func post(t *testing.T, url, body string) (int, string) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func status(t *testing.T, base string) agentapi.Status {
	t.Helper()
	code, body := get(t, base+agentapi.PathStatus)
	var st agentapi.Status
	if err := json.Unmarshal([]byte(body), &st); code != 200 || err != nil {
		t.Fatalf("GET /status = %d %q (%v)", code, body, err)
	}
	return st
}

func TestIndexAndPing(t *testing.T) {
	_, hs := newServer(t, &heapMemory{})
	code, body := get(t, hs.URL+"/")
	if code != 200 || !strings.Contains(body, "<html") || len(body) < 2048 {
		t.Errorf("GET / = %d, %d bytes", code, len(body))
	}
	if code, _ := get(t, hs.URL+"/nope"); code != 404 {
		t.Errorf("GET /nope = %d, want 404", code)
	}
	for i := 1; i <= 3; i++ {
		code, body := get(t, hs.URL+agentapi.PathPing)
		if want := "pong " + string(rune('0'+i)) + "\n"; code != 200 || body != want {
			t.Errorf("ping %d = %d %q, want %q", i, code, body, want)
		}
	}
}

func TestIdleStatusAndVerifyConflict(t *testing.T) {
	_, hs := newServer(t, &heapMemory{})
	st := status(t, hs.URL)
	if st.BootID != "b00t" || st.MemTotalBytes != 512<<20 || st.Workload.Name != workload.Idle || st.Workload.Running {
		t.Errorf("idle status = %+v", st)
	}
	if code, _ := get(t, hs.URL+agentapi.PathVerify); code != http.StatusConflict {
		t.Errorf("GET /verify while idle = %d, want 409", code)
	}
}

func TestWorkloadLifecycle(t *testing.T) {
	mem := &heapMemory{}
	_, hs := newServer(t, mem)
	code, body := post(t, hs.URL+agentapi.PathWorkload, `{"name":"memdirty","wss_bytes":4194304,"pages_per_sec":20000,"hot_fraction":0.5,"hot_weight":0.8}`)
	if code != 200 {
		t.Fatalf("POST /workload = %d %s", code, body)
	}
	var ws agentapi.WorkloadStatus
	if err := json.Unmarshal([]byte(body), &ws); err != nil {
		t.Fatal(err)
	}
	want := workload.Config{Name: workload.MemDirty, WSSBytes: 4 << 20, PagesPerSec: 20000, BytesPerPage: 8, HotFraction: 0.5, HotWeight: 0.8}
	if ws.Config != want {
		t.Errorf("config after POST = %+v, want %+v", ws.Config, want)
	}
	if mem.Live() != 4<<20 {
		t.Errorf("live memory = %d", mem.Live())
	}

	deadline := time.Now().Add(10 * time.Second)
	var st agentapi.Status
	for st = status(t, hs.URL); !st.Workload.Populated || st.Workload.DirtiedTotal == 0; st = status(t, hs.URL) {
		if time.Now().After(deadline) {
			t.Fatalf("workload not populated and dirtying after 10s: %+v", st.Workload)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !st.Workload.Running || st.Workload.TargetPagesPerSec != 20000 || st.Workload.StartedAt.IsZero() {
		t.Errorf("running status = %+v", st.Workload)
	}

	code, body = get(t, hs.URL+agentapi.PathVerify)
	var vr agentapi.VerifyResult
	if err := json.Unmarshal([]byte(body), &vr); code != 200 || err != nil {
		t.Fatalf("GET /verify = %d %q", code, body)
	}
	if vr.PagesChecked != 1024 || vr.PagesWrong != 0 || vr.FirstWrong != -1 {
		t.Errorf("verify = %+v", vr)
	}
	if !strings.Contains(body, `"first_wrong":-1`) {
		t.Errorf("verify JSON %s lacks first_wrong", body)
	}

	// Replacing frees the old working set before allocating the new one.
	if code, body := post(t, hs.URL+agentapi.PathWorkload, `{"name":"memdirty","wss_bytes":1048576}`); code != 200 {
		t.Fatalf("replace: %d %s", code, body)
	}
	if mem.Live() != 1<<20 {
		t.Errorf("live memory after replace = %d, want 1M", mem.Live())
	}
	if code, body := post(t, hs.URL+agentapi.PathWorkload, `{"name":"idle"}`); code != 200 {
		t.Fatalf("idle: %d %s", code, body)
	}
	if mem.Live() != 0 {
		t.Errorf("live memory after idle = %d", mem.Live())
	}
	if st := status(t, hs.URL); st.Workload.Name != workload.Idle {
		t.Errorf("status after idle = %+v", st.Workload)
	}
}

func TestBadWorkloadConfigs(t *testing.T) {
	_, hs := newServer(t, &heapMemory{})
	for _, body := range []string{
		`{"name":"memdirty","wss_bytes":4097}`,
		`{"name":"bogus"}`,
		`{"name":"memdirty","wss_bytes":536870912}`, // whole guest
		`{"name":"memdirty","wss_byte":4096}`,       // typo
		`not json`,
	} {
		code, msg := post(t, hs.URL+agentapi.PathWorkload, body)
		if code != http.StatusBadRequest {
			t.Errorf("POST %s = %d %q, want 400", body, code, msg)
		}
	}
	if st := status(t, hs.URL); st.Workload.Error == "" || st.Workload.Name != workload.Idle {
		t.Errorf("status after refused change = %+v", st.Workload)
	}
}

func TestVerifyWhileReplacing(t *testing.T) {
	// Verify and workload changes race; memory must never be freed under a
	// running verification (run with -race).
	s, _ := newServer(t, &heapMemory{})
	cfg := workload.Config{Name: workload.MemDirty, WSSBytes: 1 << 20, PagesPerSec: 100000}
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 20 {
				if i == 0 {
					if _, err := s.SetWorkload(cfg); err != nil {
						t.Error(err)
					}
				} else if r, err := s.Verify(); err == nil && r.PagesWrong != 0 {
					t.Errorf("verify during replacement: %+v", r)
				}
			}
		}()
	}
	wg.Wait()
}

// memDisk is a Disk in memory that records whether it was closed.
type memDisk struct {
	mu     sync.Mutex
	data   []byte
	closed bool
}

func (d *memDisk) ReadAt(p []byte, off int64) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return copy(p, d.data[off:]), nil
}

func (d *memDisk) WriteAt(p []byte, off int64) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return copy(d.data[off:], p), nil
}

func (d *memDisk) Size() (int64, error) { return int64(len(d.data)), nil }

func (d *memDisk) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	return nil
}

func (d *memDisk) corrupt(off int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.data[off] ^= 0xff
}

func TestDiskWorkload(t *testing.T) {
	mem := &heapMemory{}
	disk := &memDisk{data: make([]byte, 1<<20)}
	s, hs := newServer(t, mem)
	s.OpenDisk = func() (agentapi.Disk, error) { return disk, nil }

	code, body := post(t, hs.URL+agentapi.PathWorkload, `{"name":"memdirty","wss_bytes":1048576,"disk_wss_bytes":524288,"disk_writes_per_sec":2000}`)
	if code != 200 {
		t.Fatalf("POST /workload = %d %s", code, body)
	}
	deadline := time.Now().Add(10 * time.Second)
	var st agentapi.Status
	for st = status(t, hs.URL); !st.Workload.Populated || st.Workload.Disk == nil || st.Workload.Disk.WrittenTotal == 0; st = status(t, hs.URL) {
		if time.Now().After(deadline) {
			t.Fatalf("disk workload not populated and writing after 10s: %+v", st.Workload)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if d := st.Workload.Disk; !d.Running || !d.Populated || d.TargetWritesPerSec != 2000 || d.Error != "" {
		t.Errorf("disk status = %+v", d)
	}

	code, body = get(t, hs.URL+agentapi.PathVerify)
	var vr agentapi.VerifyResult
	if err := json.Unmarshal([]byte(body), &vr); code != 200 || err != nil {
		t.Fatalf("GET /verify = %d %q", code, body)
	}
	if vr.PagesChecked != 256 || vr.PagesWrong != 0 || vr.BlocksChecked != 128 || vr.BlocksWrong != 0 || vr.FirstWrongBlock != -1 {
		t.Errorf("verify = %+v", vr)
	}

	disk.corrupt(100*4096 + 7)
	if vr, err := s.Verify(); err != nil || vr.BlocksWrong != 1 || vr.FirstWrongBlock != 100 || vr.BlocksStale != 0 || vr.PagesWrong != 0 {
		t.Errorf("verify after corrupting block 100 = %+v, %v", vr, err)
	}

	if code, body := post(t, hs.URL+agentapi.PathWorkload, `{"name":"idle"}`); code != 200 {
		t.Fatalf("idle: %d %s", code, body)
	}
	if !disk.closed || mem.Live() != 0 {
		t.Errorf("after idle: disk closed %v, live memory %d", disk.closed, mem.Live())
	}
	if st := status(t, hs.URL); st.Workload.Disk != nil {
		t.Errorf("idle status has a disk: %+v", st.Workload)
	}
}

func TestDiskWorkloadRefused(t *testing.T) {
	mem := &heapMemory{}
	disk := &memDisk{data: make([]byte, 64<<10)}
	s, hs := newServer(t, mem)
	s.OpenDisk = func() (agentapi.Disk, error) { return disk, nil }
	code, msg := post(t, hs.URL+agentapi.PathWorkload, `{"name":"memdirty","wss_bytes":1048576,"disk_wss_bytes":1048576}`)
	if code != http.StatusBadRequest || !strings.Contains(msg, "exceeds the disk") {
		t.Errorf("disk working set larger than the disk: %d %q, want 400", code, msg)
	}
	if !disk.closed || mem.Live() != 0 {
		t.Errorf("after refusal: disk closed %v, live memory %d", disk.closed, mem.Live())
	}

	s.OpenDisk = func() (agentapi.Disk, error) { return nil, errors.New("no such device") }
	code, msg = post(t, hs.URL+agentapi.PathWorkload, `{"name":"memdirty","wss_bytes":1048576,"disk_wss_bytes":4096}`)
	if code != http.StatusInternalServerError || !strings.Contains(msg, "no such device") {
		t.Errorf("disk that does not open: %d %q, want 500", code, msg)
	}
	if mem.Live() != 0 {
		t.Errorf("live memory after a failed start = %d", mem.Live())
	}
}

// The fit check judges a working set by what the guest has available
// (MemAvailable, which leaves out the initramfs held in RAM), counting the
// running working set as free when it is resident; a refused one changes
// nothing.
func TestWorkloadFitsAvailableMemory(t *testing.T) {
	mem := &heapMemory{}
	var avail atomic.Int64
	avail.Store(100 << 20)
	s := &agentapi.Server{BootID: "b00t", Booted: time.Now(), MemTotal: 512 << 20, Memory: mem, Logf: t.Logf,
		// The kernel's MemAvailable drops by what the working set holds.
		MemAvailable: func() int64 { return avail.Load() - mem.Live() }}
	hs := httptest.NewServer(s.Handler())
	defer hs.Close()
	defer s.Close()

	// 100 MiB available less the 64 MiB reserve (an eighth of MemTotal):
	// 40 MiB does not fit, though half of MemTotal would.
	code, body := post(t, hs.URL+agentapi.PathWorkload, `{"name":"memdirty","wss_bytes":41943040,"pages_per_sec":1000}`)
	if code != http.StatusBadRequest || !strings.Contains(body, "at most 37748736") {
		t.Fatalf("40 MiB of 100 available: POST = %d %q, want 400 naming the most that fits", code, body)
	}
	if mem.Live() != 0 || status(t, hs.URL).Workload.Name != workload.Idle {
		t.Fatalf("a refused working set changed the guest: live %d", mem.Live())
	}
	if code, body := post(t, hs.URL+agentapi.PathWorkload, `{"name":"memdirty","wss_bytes":33554432,"pages_per_sec":1000}`); code != 200 {
		t.Fatalf("32 MiB of 100 available: POST = %d %q", code, body)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !status(t, hs.URL).Workload.Populated {
		if time.Now().After(deadline) {
			t.Fatal("32 MiB working set not populated after 10 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	st := status(t, hs.URL)
	if st.MemAvailableBytes != 68<<20 || st.AgentBytes <= 0 || st.Goroutines <= 0 {
		t.Errorf("status memory: available %d, agent %d, goroutines %d", st.MemAvailableBytes, st.AgentBytes, st.Goroutines)
	}
	// 68 MiB available now, plus the 32 MiB freed first: 40 MiB does not
	// fit, 32 MiB again does, and the refusal left the first running.
	if code, _ := post(t, hs.URL+agentapi.PathWorkload, `{"name":"memdirty","wss_bytes":41943040,"pages_per_sec":1000}`); code != http.StatusBadRequest {
		t.Errorf("40 MiB replacing 32 MiB of 100: POST = %d, want 400", code)
	}
	if w := status(t, hs.URL).Workload; !w.Running || w.WSSBytes != 32<<20 || mem.Live() != 32<<20 {
		t.Errorf("after a refused replacement: %+v, live %d", w, mem.Live())
	}
	if code, body := post(t, hs.URL+agentapi.PathWorkload, `{"name":"memdirty","wss_bytes":33554432,"pages_per_sec":2000}`); code != 200 {
		t.Errorf("32 MiB replacing 32 MiB of 100: POST = %d %q", code, body)
	}
}

func TestParseMemAvailable(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
	}{
		{"MemTotal:         210752 kB\nMemFree:           12000 kB\nMemAvailable:      13776 kB\nBuffers: 0 kB\n", 13776 << 10},
		{"MemAvailable: 5 kB", 5 << 10},
		{"MemTotal: 1 kB\n", 0},
		{"MemAvailable: 12 MB\n", 0},
		{"MemAvailable: -3 kB\n", 0},
		{"MemAvailable: 99999999999999999999 kB\n", 0},
		{"MemAvailable:\n", 0},
		{"", 0},
	} {
		if got := agentapi.ParseMemAvailable([]byte(c.in)); got != c.want {
			t.Errorf("ParseMemAvailable(%q) = %d, want %d", c.in, got, c.want)
		}
	}
}
