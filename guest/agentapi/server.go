package agentapi

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"runtime/metrics"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vmigrate/vmigrate/guest/workload"
)

//go:embed index.html
var indexHTML []byte

// ErrBadConfig marks a workload change refused because of its configuration.
var ErrBadConfig = errors.New("bad workload config")

// maxConfigBody bounds the body of POST /workload.
const maxConfigBody = 64 << 10

// Allocator provides the working set memory of a workload and takes it back
// once the workload has stopped.
type Allocator interface {
	Alloc(size int64) ([]byte, error)
	Free(mem []byte) error
}

// Server owns the guest's workload and serves the agent's HTTP API. Each
// workload runs in a goroutine owned by the Server; it exits when the
// workload is replaced or the Server is closed. Set the exported fields
// before the first call.
type Server struct {
	BootID   string
	Booted   time.Time // for uptime
	MemTotal int64     // bytes; 0 disables the fit check
	// MemAvailable reads the kernel's MemAvailable in bytes; nil (or a
	// reading of 0) leaves the fit check to MemTotal alone.
	MemAvailable func() int64
	Memory       Allocator // nil: anonymous mmap
	// OpenDisk opens the disk of a workload with a disk working set; nil
	// opens DiskPath with O_DIRECT|O_DSYNC.
	OpenDisk func() (Disk, error)
	Logf     func(format string, args ...any)

	pings atomic.Uint64

	mu      sync.RWMutex // write-held to change cur; read-held by Verify so memory outlives it
	cur     *run
	lastErr string
}

// run is one running memdirty workload, with its disk writer if it has a
// disk working set.
type run struct {
	w      *workload.Workload
	mem    []byte
	d      *workload.Disk // nil without a disk working set
	disk   Disk
	cancel context.CancelFunc
	wg     sync.WaitGroup // the memory and disk goroutines
}

func (s *Server) logf(format string, args ...any) {
	if s.Logf != nil {
		s.Logf(format, args...)
	}
}

func (s *Server) openDisk() (Disk, error) {
	if s.OpenDisk != nil {
		return s.OpenDisk()
	}
	return openDirectDisk(DiskPath)
}

func (s *Server) memory() Allocator {
	if s.Memory != nil {
		return s.Memory
	}
	return anonMemory{}
}

// reserve is memory kept free beside a working set, for the agent and
// the kernel, whose network stack grows under load: TCP alone may take
// about 3/32 of RAM (tcp_mem's default limit) before it drops packets, and
// slab and receive buffers come on top. A working set that does not fit
// invites the OOM killer, and with PID 1 the only process the kernel then
// panics. Against MemTotal it must also cover the initramfs, which lives
// in RAM (about 42 MiB).
func reserve(memTotal int64, ofAvailable bool) int64 {
	if ofAvailable {
		return max(48<<20, memTotal/8)
	}
	return max(96<<20, memTotal/8)
}

// fits refuses a working set of wss bytes that would leave the guest less
// than the reserve free. It judges by MemAvailable when it can read it
// (the current working set counts as free when it is fully resident: it
// is freed first), by MemTotal otherwise. Callers hold mu.
func (s *Server) fits(wss int64) error {
	if s.MemTotal <= 0 {
		return nil
	}
	var avail int64
	if s.MemAvailable != nil {
		avail = s.MemAvailable()
	}
	if avail <= 0 {
		if r := reserve(s.MemTotal, false); wss > s.MemTotal-r {
			return fmt.Errorf("workload: wss_bytes %d leaves less than %d of the guest's %d bytes free",
				wss, r, s.MemTotal)
		}
		return nil
	}
	if s.cur != nil && s.cur.w.Stats().Populated {
		avail += int64(len(s.cur.mem))
	}
	if r := reserve(s.MemTotal, true); wss > avail-r {
		return fmt.Errorf("workload: wss_bytes %d leaves less than %d of the %d bytes the guest has available (MemAvailable; of %d in all, the kernel and the initramfs hold the rest): at most %d",
			wss, r, avail, s.MemTotal, max(0, avail-r))
	}
	return nil
}

// SetWorkload stops the current workload, frees its memory, and starts cfg
// (defaults applied). Idle leaves nothing running. A refused cfg changes
// nothing.
func (s *Server) SetWorkload(cfg workload.Config) (WorkloadStatus, error) {
	cfg = cfg.WithDefaults(s.MemTotal)
	err := cfg.Validate()

	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil && cfg.Name == workload.MemDirty {
		err = s.fits(cfg.WSSBytes)
	}
	if err != nil {
		err = fmt.Errorf("%w: %w", ErrBadConfig, err)
	} else {
		err = s.replace(cfg)
	}
	s.lastErr = ""
	if err != nil {
		s.lastErr = err.Error()
	}
	return s.workloadStatus(), err
}

// replace swaps the running workload. Callers hold mu for writing.
func (s *Server) replace(cfg workload.Config) error {
	if err := s.stop(); err != nil {
		return err
	}
	if cfg.Name != workload.MemDirty {
		s.logf("workload: idle")
		return nil
	}
	r := &run{}
	if cfg.DiskWSSBytes > 0 {
		disk, d, err := s.startDisk(cfg)
		if err != nil {
			return err
		}
		r.disk, r.d = disk, d
	}
	if cfg.Body == workload.BodyFiles {
		if err := loadCorpus(); err != nil {
			if r.disk != nil {
				r.disk.Close()
			}
			return err
		}
	}
	mem, err := s.memory().Alloc(cfg.WSSBytes)
	if err == nil {
		r.mem = mem
		r.w, err = workload.New(cfg, mem)
		if err != nil {
			s.memory().Free(mem)
		}
	} else {
		err = fmt.Errorf("workload: allocate %d bytes: %w", cfg.WSSBytes, err)
	}
	if err != nil {
		if r.disk != nil {
			r.disk.Close()
		}
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	r.wg.Add(1)
	go func() { // exits when ctx ends
		defer r.wg.Done()
		r.w.Run(ctx)
	}()
	if r.d != nil {
		r.wg.Add(1)
		go func() { // exits when ctx ends or a write fails (reported by Stats)
			defer r.wg.Done()
			if err := r.d.Run(ctx); err != nil {
				s.logf("workload: disk writer stopped: %v", err)
			}
		}()
	}
	s.cur = r
	s.logf("workload: memdirty wss=%s rate=%d bpp=%d hot=%g:%g disk=%s diskrate=%d",
		workload.FormatSize(cfg.WSSBytes), cfg.PagesPerSec, cfg.BytesPerPage, cfg.HotFraction, cfg.HotWeight,
		workload.FormatSize(cfg.DiskWSSBytes), cfg.DiskWritesPerSec)
	return nil
}

// startDisk opens the disk and prepares the writer of cfg's disk working set.
func (s *Server) startDisk(cfg workload.Config) (Disk, *workload.Disk, error) {
	disk, err := s.openDisk()
	if err != nil {
		return nil, nil, fmt.Errorf("workload: disk: %w", err)
	}
	size, err := disk.Size()
	if err == nil && cfg.DiskWSSBytes > size {
		err = fmt.Errorf("%w: disk_wss_bytes %d exceeds the disk's %d bytes", ErrBadConfig, cfg.DiskWSSBytes, size)
	}
	var d *workload.Disk
	if err == nil {
		d, err = workload.NewDisk(cfg, disk)
	}
	if err != nil {
		disk.Close()
		return nil, nil, fmt.Errorf("workload: disk: %w", err)
	}
	return disk, d, nil
}

// stop ends the running workload and frees its memory. Callers hold mu for
// writing, so no Verify is using the memory.
func (s *Server) stop() error {
	r := s.cur
	if r == nil {
		return nil
	}
	r.cancel()
	r.wg.Wait()
	s.cur = nil
	var errs []error
	if err := s.memory().Free(r.mem); err != nil {
		errs = append(errs, fmt.Errorf("workload: free working set: %w", err))
	}
	if r.disk != nil {
		if err := r.disk.Close(); err != nil {
			errs = append(errs, fmt.Errorf("workload: close disk: %w", err))
		}
	}
	return errors.Join(errs...)
}

// Close stops the workload and frees its memory.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stop()
}

// agentBytes is the memory the Go runtime has mapped and not returned to
// the kernel.
func agentBytes() int64 {
	m := []metrics.Sample{{Name: "/memory/classes/total:bytes"}, {Name: "/memory/classes/heap/released:bytes"}}
	metrics.Read(m)
	if m[0].Value.Kind() != metrics.KindUint64 || m[1].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return int64(m[0].Value.Uint64() - m[1].Value.Uint64())
}

// Status reports the guest and its workload; it does not wait for a running
// verification.
func (s *Server) Status() Status {
	s.mu.RLock()
	defer s.mu.RUnlock()
	st := Status{
		BootID:        s.BootID,
		UptimeMS:      time.Since(s.Booted).Milliseconds(),
		MemTotalBytes: s.MemTotal,
		AgentBytes:    agentBytes(),
		Goroutines:    runtime.NumGoroutine(),
		Workload:      s.workloadStatus(),
	}
	if s.MemAvailable != nil {
		st.MemAvailableBytes = s.MemAvailable()
	}
	return st
}

// workloadStatus describes cur. Callers hold mu.
func (s *Server) workloadStatus() WorkloadStatus {
	ws := WorkloadStatus{Config: workload.Config{Name: workload.Idle}, Error: s.lastErr}
	if s.cur == nil {
		return ws
	}
	st := s.cur.w.Stats()
	ws.Config = s.cur.w.Config()
	ws.Running = st.Running
	ws.Populated = st.Populated
	ws.PopulateMS = st.PopulateDuration.Milliseconds()
	ws.DirtiedTotal = st.DirtiedTotal
	ws.AchievedPagesPerSec = st.AchievedPagesPerSec
	ws.TargetPagesPerSec = st.TargetPagesPerSec
	ws.StartedAt = st.StartedAt
	if s.cur.d != nil {
		ds := s.cur.d.Stats()
		ws.Populated = ws.Populated && ds.Populated
		ws.Disk = &DiskStatus{
			Running:              ds.Running,
			Populated:            ds.Populated,
			PopulateMS:           ds.PopulateDuration.Milliseconds(),
			WrittenTotal:         ds.WrittenTotal,
			AchievedWritesPerSec: ds.AchievedWritesPerSec,
			TargetWritesPerSec:   ds.TargetWritesPerSec,
		}
		if ds.Err != nil {
			ws.Disk.Error = ds.Err.Error()
		}
	}
	return ws
}

// Verify checks the working set in memory and, with a disk working set, on
// the disk; it returns workload.ErrNotPopulated when no memdirty workload has
// finished its initial fill (of both).
func (s *Server) Verify() (VerifyResult, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.cur == nil {
		return VerifyResult{}, workload.ErrNotPopulated
	}
	t0 := time.Now()
	res := VerifyResult{FirstWrongBlock: -1}
	if s.cur.d != nil {
		// The disk first: it fails fast with ErrNotPopulated while filling.
		d, err := s.cur.d.Verify()
		if err != nil {
			return VerifyResult{}, err
		}
		res.BlocksChecked, res.BlocksWrong, res.BlocksStale, res.FirstWrongBlock =
			d.BlocksChecked, d.BlocksWrong, d.BlocksStale, d.FirstWrong
	}
	r, err := s.cur.w.Verify()
	if err != nil {
		return VerifyResult{}, err
	}
	res.PagesChecked, res.PagesWrong, res.FirstWrong = r.PagesChecked, r.PagesWrong, r.FirstWrong
	res.MS = time.Since(t0).Milliseconds()
	return res, nil
}

// Handler serves the agent's HTTP API.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write(indexHTML)
	})
	mux.HandleFunc("GET "+PathPing, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		io.WriteString(w, "pong "+strconv.FormatUint(s.pings.Add(1), 10)+"\n")
	})
	mux.HandleFunc("GET "+PathStatus, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.Status())
	})
	mux.HandleFunc("GET "+PathVerify, func(w http.ResponseWriter, r *http.Request) {
		res, err := s.Verify()
		if errors.Is(err, workload.ErrNotPopulated) {
			http.Error(w, err.Error(), http.StatusConflict)
			return
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		writeJSON(w, http.StatusOK, res)
	})
	mux.HandleFunc("POST "+PathWorkload, func(w http.ResponseWriter, r *http.Request) {
		var cfg workload.Config
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxConfigBody))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&cfg); err != nil {
			http.Error(w, "decode workload config: "+err.Error(), http.StatusBadRequest)
			return
		}
		st, err := s.SetWorkload(cfg)
		switch {
		case errors.Is(err, ErrBadConfig):
			http.Error(w, err.Error(), http.StatusBadRequest)
		case err != nil:
			http.Error(w, err.Error(), http.StatusInternalServerError)
		default:
			writeJSON(w, http.StatusOK, st)
		}
	})
	return mux
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}
