// Package scenarios holds the experiments vmigrate reproduces, each a
// function from options to a result that can be printed or kept as JSON.
// Demo is the main job: one migration of the built-in lab guest, checked
// from the outside (same address, same boot, every page intact).
package scenarios

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/vmigrate/vmigrate/guest"
	"github.com/vmigrate/vmigrate/guest/agentapi"
	"github.com/vmigrate/vmigrate/guest/workload"
	"github.com/vmigrate/vmigrate/lab"
	"github.com/vmigrate/vmigrate/migrate"
	"github.com/vmigrate/vmigrate/probe"
	"github.com/vmigrate/vmigrate/qmp"
	"github.com/vmigrate/vmigrate/stopcopy"
	"github.com/vmigrate/vmigrate/wanlink"
)

// DemoOptions configure Demo.
type DemoOptions struct {
	Image    guest.Image
	MemBytes int64
	Workload workload.Config
	// DiskBytes gives the guest a disk of that size, mirrored with the
	// migration (by vmigrate on the QMP lab, by libvirt through vmigrate's
	// tunnel on the libvirt lab).
	DiskBytes int64
	// DiskImage is a raw image the source's disk starts as (lab.Config).
	DiskImage string
	// CompareDisks, after a completed migration of a guest that does not
	// write its disk, compares the source's image with the destination's
	// byte for byte (DemoResult.DisksIdentical).
	CompareDisks bool
	// DiskCopyMode and DiskConvergeAfter are migrate.Options' (on the
	// libvirt lab, write-blocking is libvirt's synchronous writes).
	DiskCopyMode      string
	DiskConvergeAfter time.Duration
	Accel             string
	CacheDir          string
	QEMU              string
	Parameters        *qmp.MigrationParameters
	AllowUnsafeTCG    bool
	// Transport carries the stream (the WAN path); nil relays it locally.
	Transport migrate.Transport
	Path      string // what Transport is, for the report
	// Direct migrates QEMU to QEMU over TCP on the lab's loopback, with
	// no relay: the baseline the tunnel's overhead is measured against.
	Direct bool
	Policy stopcopy.Policy
	// Libvirt runs the lab as two libvirt daemons and migrates the guest
	// as a libvirt domain (migrate.RunLibvirt).
	Libvirt bool
	// Virsh, with Libvirt, migrates with plain `virsh migrate --live`
	// through Link instead (no tunnel, no codec, no policy): the baseline.
	Virsh        bool
	Link         *wanlink.Config
	VirshTimeout time.Duration // virsh's --timeout (suspend after it)
	PopulateWait time.Duration // how long the workload may take to fill its working set
	// Prepare, when set, runs on the QMP lab after the guest settled and
	// before the migration starts: migration capabilities and parameters
	// of a native configuration (bench native), on either side.
	Prepare func(ctx context.Context, src, dst *qmp.Client) error
	// Around, when set, runs once the guest settled, just before the
	// migration starts (after Prepare), on either lab: it starts what
	// runs beside the migration, such as the clients of a web server.
	// The function it returns runs when the migration is over, whatever
	// happened, before the guest checks (whose /verify loads the guest),
	// with the lab still up.
	Around   func(ctx context.Context, env LabEnv) (after func(*DemoResult), err error)
	Progress func(migrate.Progress)
	Log      *zap.Logger
}

// LabEnv is what DemoOptions.Around can reach: the guest, from the lab's
// bridge, and the emulated link's byte count.
type LabEnv struct {
	GuestIP string
	// Dial connects from the lab's network namespace, where the guest's
	// address is routed.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Wire returns the bytes that crossed the emulated link so far, both
	// ways (0 without one).
	Wire func() int64
}

// around runs o.Around, if set, and returns what to run afterwards.
func (o DemoOptions) around(ctx context.Context, env LabEnv, res *DemoResult) (func(), error) {
	if o.Around == nil {
		return func() {}, nil
	}
	after, err := o.Around(ctx, env)
	if err != nil {
		res.Error = err.Error()
		return nil, err
	}
	var once sync.Once
	return func() { once.Do(func() { after(res) }) }, nil
}

// transportWire is the Wire of a LabEnv whose migration goes through t.
func transportWire(t migrate.Transport) func() int64 {
	return func() int64 {
		if t == nil {
			return 0
		}
		_, wire := t.Counts()
		return wire
	}
}

// DemoResult is the migration's result plus what the guest showed.
type DemoResult struct {
	migrate.Result
	Accel       string         `json:"accel"`
	AccelReason string         `json:"accel_reason"`
	QEMU        lab.QEMUChoice `json:"qemu"`
	GuestIP     string         `json:"guest_ip"`
	Path        string         `json:"path"`
	MemBytes    int64          `json:"mem_bytes"`
	BootMS      int64          `json:"boot_ms"`

	Workload         workload.Config `json:"workload"`
	AchievedDirtyPPS float64         `json:"achieved_dirty_pages_per_sec"`

	// SameAddress: the guest answered at GuestIP from the destination.
	SameAddress bool `json:"same_address"`
	// SameBoot: it is the same boot of the same guest (boot ID kept).
	SameBoot     bool  `json:"same_boot"`
	PagesChecked int64 `json:"pages_checked"`
	PagesWrong   int64 `json:"pages_wrong"`
	// BlocksChecked and BlocksWrong are /verify's disk blocks (a lab with
	// a disk and a disk workload).
	BlocksChecked int64 `json:"blocks_checked,omitempty"`
	BlocksWrong   int64 `json:"blocks_wrong,omitempty"`
	// DisksIdentical: the destination's image equals the source's, byte
	// for byte (CompareDisks); DiskDiffer says where they first differ.
	DisksIdentical bool   `json:"disks_identical,omitempty"`
	DiskDiffer     string `json:"disk_differ,omitempty"`
	// SourceDiskUntouched: with a DiskImage and a workload that writes
	// the disk, the source's image still equals DiskImage past the
	// workload's disk working set: the migration wrote nothing to it.
	SourceDiskUntouched bool `json:"source_disk_untouched,omitempty"`
	// Verified: the move completed and every page of the workload holds
	// what the guest last wrote to it.
	Verified bool `json:"verified"`
	// CPU is what each process spent during the migration (QMP lab).
	CPU *CPUUse `json:"cpu,omitempty"`
}

// CPUUse is the CPU time of the migration's processes, from the migrate
// command to the end: the source and destination QEMUs (every thread:
// vCPU, migration, multifd) and vmigrate itself (tunnel ends, codecs, the
// emulated link, the prober).
type CPUUse struct {
	SrcQEMUMs  int64 `json:"src_qemu_ms"`
	DstQEMUMs  int64 `json:"dst_qemu_ms"`
	VmigrateMs int64 `json:"vmigrate_ms"`
}

type cpuMark struct{ src, dst, self time.Duration }

func markCPU(l *lab.Lab) cpuMark {
	var m cpuMark
	m.src, _ = l.Src.CPUTime()
	m.dst, _ = l.Dst.CPUTime()
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		m.self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	return m
}

func (m cpuMark) since(a cpuMark) *CPUUse {
	return &CPUUse{SrcQEMUMs: (m.src - a.src).Milliseconds(), DstQEMUMs: (m.dst - a.dst).Milliseconds(), VmigrateMs: (m.self - a.self).Milliseconds()}
}

// ErrVerify marks a migration that completed but whose guest checks failed.
var ErrVerify = errors.New("guest check failed")

// Demo starts the lab, migrates the guest once, checks it, and tears the
// lab down again, whatever happens.
func Demo(ctx context.Context, o DemoOptions) (DemoResult, error) {
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if o.PopulateWait == 0 {
		o.PopulateWait = 10 * time.Minute
	}
	if o.Path == "" {
		o.Path = "local relay"
	}
	res := DemoResult{MemBytes: o.MemBytes, Workload: o.Workload, GuestIP: lab.GuestIP, Path: o.Path}
	res.Status = migrate.StatusFailed
	res.Passes = []migrate.Pass{}
	if o.Libvirt {
		return demoLibvirt(ctx, o, res)
	}

	l, err := lab.Up(ctx, o.labConfig())
	if err != nil {
		res.Error = err.Error()
		return res, err
	}
	defer l.Down()
	before, err := res.settle(ctx, o, l.Accel, l.QEMU, l.BootTime, l.Guest)
	if err != nil {
		return res, err
	}

	src, dst, err := dialLab(ctx, l)
	if err != nil {
		res.Error = err.Error()
		return res, err
	}
	defer src.Close()
	defer dst.Close()
	var disks []string
	if l.SrcDisk != "" {
		disks = []string{lab.DiskNode}
	}
	incoming, relayDir := l.IncomingURI, l.Dir
	if o.Direct {
		incoming, relayDir = "tcp:127.0.0.1:0", ""
	}
	if o.Prepare != nil {
		if err := o.Prepare(ctx, src, dst); err != nil {
			res.Error = err.Error()
			return res, err
		}
	}
	after, err := o.around(ctx, LabEnv{GuestIP: l.GuestIP, Dial: l.Netns.DialContext, Wire: transportWire(o.Transport)}, &res)
	if err != nil {
		return res, err
	}
	defer after()
	cpu0 := markCPU(l)
	mres, err := migrate.Run(ctx, migrate.Options{
		Src: src, Dst: dst, IncomingURI: incoming, RelayDir: relayDir, Transport: o.Transport, Policy: o.Policy,
		Probe:      pingProbe(l.ProbeClient(), l.GuestIP),
		Parameters: o.Parameters, Progress: o.Progress, Log: o.Log, AllowUnsafeTCG: o.AllowUnsafeTCG,
		Disks: disks, NBDSocket: filepath.Join(l.Dir, "nbd.sock"), DiskCopyMode: o.DiskCopyMode, DiskConvergeAfter: o.DiskConvergeAfter,
	})
	res.Result = mres
	res.CPU = markCPU(l).since(cpu0)
	after()
	if err != nil {
		// A QEMU that died shows to migrate only as a closed QMP socket.
		for _, vm := range []*lab.VM{l.Src, l.Dst} {
			if gone := vm.Exited(); gone != nil {
				err = fmt.Errorf("%w; %v", err, gone)
			}
		}
		// A guest that runs but does not answer says why, if at all, on
		// its console (an oops, a hung task).
		if errors.Is(err, migrate.ErrDestLost) && l.Dst.Exited() == nil {
			err = fmt.Errorf("%w; destination console tail: %s", err, lab.Tail(l.Dst.Spec.Serial, 800))
		}
		return res, err
	}
	if err := checkGuest(ctx, l.Guest, l.GuestIP, before, &res); err != nil {
		return res, err
	}
	if o.CompareDisks && o.DiskBytes+fileSize(o.DiskImage) > 0 {
		off, err := CompareImages(l.SrcDisk, l.DstDisk)
		switch {
		case err != nil:
			res.DiskDiffer = err.Error()
		case off >= 0:
			res.DiskDiffer = fmt.Sprintf("first differ at byte %d", off)
		default:
			res.DisksIdentical = true
		}
		if !res.DisksIdentical {
			return res, fmt.Errorf("%w: the destination's disk image is not the source's: %s", ErrVerify, res.DiskDiffer)
		}
	}
	if o.DiskImage != "" && o.Workload.DiskWSSBytes > 0 {
		off, err := compareImagesFrom(l.SrcDisk, o.DiskImage, o.Workload.DiskWSSBytes)
		if err != nil || off >= 0 {
			return res, fmt.Errorf("%w: the source's disk changed outside the workload's working set (byte %d, %v)", ErrVerify, off, err)
		}
		res.SourceDiskUntouched = true
	}
	return res, nil
}

func fileSize(p string) int64 {
	if p == "" {
		return 0
	}
	fi, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// CompareImages returns the first offset where two images differ, or -1.
func CompareImages(a, b string) (int64, error) { return compareImagesFrom(a, b, 0) }

// compareImagesFrom compares two images from byte from on.
func compareImagesFrom(a, b string, from int64) (int64, error) {
	fa, err := os.Open(a)
	if err != nil {
		return 0, err
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		return 0, err
	}
	defer fb.Close()
	for _, f := range []*os.File{fa, fb} {
		if _, err := f.Seek(from, io.SeekStart); err != nil {
			return 0, err
		}
	}
	ba, bb := make([]byte, 4<<20), make([]byte, 4<<20)
	off := from
	for {
		na, ea := io.ReadFull(fa, ba)
		nb, eb := io.ReadFull(fb, bb)
		n := min(na, nb)
		if !bytes.Equal(ba[:n], bb[:n]) {
			for i := range n {
				if ba[i] != bb[i] {
					return off + int64(i), nil
				}
			}
		}
		off += int64(n)
		if na != nb {
			return off, nil // one is longer
		}
		if ea != nil || eb != nil {
			if ignoreEOF(ea) == nil && ignoreEOF(eb) == nil {
				return -1, nil
			}
			return 0, errors.Join(ignoreEOF(ea), ignoreEOF(eb))
		}
	}
}

func ignoreEOF(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return nil
	}
	return err
}

// demoLibvirt is Demo on the libvirt lab.
func demoLibvirt(ctx context.Context, o DemoOptions, res DemoResult) (DemoResult, error) {
	if o.Direct {
		err := errors.New("demo: --direct is for the QMP lab")
		res.Error = err.Error()
		return res, err
	}
	l, err := lab.UpLibvirt(ctx, o.labConfig())
	if err != nil {
		res.Error = err.Error()
		return res, err
	}
	defer l.Down()
	before, err := res.settle(ctx, o, l.Accel, l.QEMU, l.BootTime, l.Guest)
	if err != nil {
		return res, err
	}
	opts := LibvirtLabOptions(l, "migration.sock")
	opts.Transport, opts.Policy, opts.Progress, opts.Log, opts.AllowUnsafeTCG = o.Transport, o.Policy, o.Progress, o.Log, o.AllowUnsafeTCG
	opts.Probe = pingProbe(l.ProbeClient(), l.GuestIP)
	if o.DiskBytes > 0 {
		opts.Disks = []string{lab.DiskNode}
		opts.DiskWriteBlocking = o.DiskCopyMode == qmp.CopyModeWriteBlocking
	}
	if p := o.Parameters; p != nil && p.MaxBandwidth != nil {
		opts.MaxBandwidthMiB = *p.MaxBandwidth >> 20
	}
	var virshLink atomic.Pointer[wanlink.Link]
	wire := transportWire(o.Transport)
	if o.Virsh {
		wire = func() int64 {
			if lk := virshLink.Load(); lk != nil {
				st := lk.Stats()
				return st.Forward.Bytes + st.Reverse.Bytes
			}
			return 0
		}
	}
	after, err := o.around(ctx, LabEnv{GuestIP: l.GuestIP, Dial: l.Netns.DialContext, Wire: wire}, &res)
	if err != nil {
		return res, err
	}
	defer after()
	var mres migrate.Result
	if o.Virsh {
		mres, err = virshMigrate(ctx, l, o.Link, o.VirshTimeout, opts.Probe, virshLink.Store)
	} else {
		mres, err = migrate.RunLibvirt(ctx, opts)
	}
	res.Result = mres
	after()
	if err != nil {
		return res, err
	}
	return res, checkGuest(ctx, l.Guest, l.GuestIP, before, &res)
}

// LibvirtLabOptions are the options that migrate the libvirt lab's
// domain through a socket named sock in the lab's migration directory:
// the source QEMU connects to it in the source daemon's namespace, where
// vmigrate listens, and the destination QEMU listens on it in the
// destination daemon's.
func LibvirtLabOptions(l *lab.LibvirtLab, sock string) migrate.LibvirtOptions {
	return migrate.LibvirtOptions{
		Domain: l.Domain, SrcURI: l.SrcURI, DstURI: l.DstURI,
		StreamSocket:  filepath.Join(l.MigDir, sock),
		ListenSocket:  filepath.Join(l.SrcMigDir, sock),
		ForwardSocket: filepath.Join(l.DstMigDir, sock),
	}
}

// labConfig is the lab the demo runs, QMP or libvirt.
func (o DemoOptions) labConfig() lab.Config {
	return lab.Config{
		Image: o.Image, MemBytes: o.MemBytes, Workload: o.Workload, Accel: o.Accel,
		QEMU: o.QEMU, CacheDir: o.CacheDir, Log: o.Log, DiskBytes: o.DiskBytes, DiskImage: o.DiskImage,
	}
}

// settle records how the lab came up and waits for the guest's workload
// to reach its steady state, returning the guest's status then.
func (r *DemoResult) settle(ctx context.Context, o DemoOptions, accel lab.AccelChoice, q lab.QEMUChoice, boot time.Duration, g *guest.Client) (agentapi.Status, error) {
	r.Accel, r.AccelReason, r.BootMS, r.QEMU = accel.Accel, accel.Reason, boot.Milliseconds(), q
	before, err := waitPopulated(ctx, g, o.Workload, o.PopulateWait, o.Log)
	if err != nil {
		r.Error = err.Error()
		return before, err
	}
	r.AchievedDirtyPPS = before.Workload.AchievedPagesPerSec
	return before, nil
}

// pingProbe measures the downtime a client of the guest sees: it pings
// the agent from the bridge over hc (Lab.ProbeClient: one kept-alive
// connection).
func pingProbe(hc *http.Client, ip string) *probe.Config {
	pinger := &guest.Client{HTTP: hc, Addr: ip}
	return &probe.Config{Send: func(ctx context.Context) error {
		_, err := pinger.Ping(ctx)
		return err
	}}
}

// waitPopulated waits until the workload has filled its working set, so
// the migration moves a guest in its steady state.
func waitPopulated(ctx context.Context, g *guest.Client, w workload.Config, limit time.Duration, log *zap.Logger) (agentapi.Status, error) {
	wctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	for {
		st, err := g.Status(wctx)
		// Populated, and dirtying long enough for a measured rate: the
		// guest is in its steady state.
		if err == nil && (w.Name != workload.MemDirty || st.Workload.Populated && st.Workload.AchievedPagesPerSec > 0) {
			return st, nil
		}
		if err == nil && w.Name == workload.MemDirty && !st.Workload.Running && st.Workload.Error != "" {
			return st, fmt.Errorf("demo: the guest refused its workload: %s", st.Workload.Error)
		}
		select {
		case <-wctx.Done():
			if err == nil {
				err = errors.New("working set not filled yet")
			}
			return st, fmt.Errorf("demo: waiting for the guest workload: %w (%v)", err, wctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func dialLab(ctx context.Context, l *lab.Lab) (*qmp.Client, *qmp.Client, error) {
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	src, err := qmp.Dial(dctx, l.Src.Spec.QMP)
	if err != nil {
		return nil, nil, fmt.Errorf("demo: source QMP: %w", err)
	}
	dst, err := qmp.Dial(dctx, l.Dst.Spec.QMP)
	if err != nil {
		src.Close()
		return nil, nil, fmt.Errorf("demo: destination QMP: %w", err)
	}
	return src, dst, nil
}

// checkGuest asks the guest, at its one address, whether it is the same
// boot and whether its memory is intact.
func checkGuest(ctx context.Context, g *guest.Client, ip string, before agentapi.Status, res *DemoResult) error {
	cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	after, err := g.Status(cctx)
	if err != nil {
		return fmt.Errorf("%w: guest at %s does not answer after the move: %v", ErrVerify, ip, err)
	}
	res.SameAddress = true
	res.SameBoot = after.BootID == before.BootID
	if !res.SameBoot {
		return fmt.Errorf("%w: guest at %s has boot ID %s, was %s: it rebooted", ErrVerify, ip, after.BootID, before.BootID)
	}
	if res.Workload.Name != workload.MemDirty {
		res.Verified = true
		return nil
	}
	v, err := g.Verify(cctx)
	if err != nil {
		return fmt.Errorf("%w: /verify: %v", ErrVerify, err)
	}
	res.PagesChecked, res.PagesWrong = v.PagesChecked, v.PagesWrong
	res.BlocksChecked, res.BlocksWrong = v.BlocksChecked, v.BlocksWrong
	res.Verified = v.PagesWrong == 0 && v.PagesChecked > 0 && v.BlocksWrong == 0 && (res.Workload.DiskWSSBytes == 0 || v.BlocksChecked > 0)
	if !res.Verified {
		return fmt.Errorf("%w: /verify checked %d pages, %d wrong (first %d), %d disk blocks, %d wrong (first %d)",
			ErrVerify, v.PagesChecked, v.PagesWrong, v.FirstWrong, v.BlocksChecked, v.BlocksWrong, v.FirstWrongBlock)
	}
	return nil
}
