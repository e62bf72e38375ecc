package migrate

// The libvirt path: libvirt owns the domain on both hosts and runs the
// migration protocol (begin, prepare, perform, finish, confirm); vmigrate
// owns the data path and the decision when pre-copy stops.
//
//	preflight: both daemons answer; the domain exists and runs on the
//	           source; the destination has no running domain of that name;
//	           a TCG source on QEMU < 9.0 is refused.
//	setup:     the transport listens on the socket libvirt's unix://
//	           migration URI names (the source QEMU connects there, the
//	           destination QEMU listens there on its own host, where the
//	           tunnel's dest end forwards to it); the policy holds pre-copy
//	           with a 1 ms downtime limit.
//	precopy:   Migrate3 (managed: vmigrate holds both connections, like
//	           virsh migrate without --p2p) or MigrateToURI3 (--p2p) runs
//	           in its own goroutine; every MIGRATION_ITERATION event is
//	           recorded with the job's counters; the policy forces the
//	           switchover by raising the limit, or aborts the job.
//	after:     the domain must run on the destination; the user's limit
//	           is put back on a failure.
//
// A failure leaves the domain running on the source (resumed if libvirt
// left it paused) and removes what the migration defined on the
// destination.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"libvirt.org/go/libvirt"

	"github.com/vmigrate/vmigrate/blockmirror"
	"github.com/vmigrate/vmigrate/probe"
	"github.com/vmigrate/vmigrate/qmp"
	"github.com/vmigrate/vmigrate/stopcopy"
)

// LibvirtOptions configure RunLibvirt.
type LibvirtOptions struct {
	Domain string
	// SrcURI and DstURI are libvirt connection URIs (qemu:///system,
	// qemu+ssh://host/system, qemu+unix:///system?socket=...).
	SrcURI, DstURI string
	// StreamSocket is the unix socket of QEMU's migration stream as both
	// QEMUs see it: the destination QEMU listens on it on its host, the
	// source QEMU connects to it on its host, where vmigrate's Transport
	// listens. Empty: libvirt's own TCP transport, no Transport.
	StreamSocket string
	// ListenSocket is StreamSocket as this process sees it on the source
	// (default StreamSocket); ForwardSocket is what a local dest end
	// dials (default StreamSocket). They differ only in a lab whose
	// daemons live in mount namespaces of their own.
	ListenSocket, ForwardSocket string
	// Transport carries the stream from ListenSocket to the destination.
	// Nil with a StreamSocket: a counting relay (both hosts are this one).
	Transport Transport
	// P2P lets the source daemon drive the migration itself
	// (MigrateToURI3 with VIR_MIGRATE_PEER2PEER); the default is managed
	// (Migrate3), vmigrate holding both connections.
	P2P bool
	// KeepSource leaves the domain defined (shut off) on the source;
	// the default undefines it there on success.
	KeepSource bool
	// Transient does not define the domain on the destination (it runs
	// there but vanishes when it stops).
	Transient bool
	// Disks are the disks (target names, e.g. "vda") libvirt copies to
	// the destination's pre-created images (VIR_MIGRATE_NON_SHARED_DISK)
	// over NBD; the NBD stream takes the Transport's disk channel, on a
	// socket named "nbd.sock" beside StreamSocket (and beside
	// ListenSocket and ForwardSocket). DiskWriteBlocking makes the
	// mirrors write-blocking from the start
	// (VIR_MIGRATE_NON_SHARED_SYNCHRONOUS_WRITES).
	Disks             []string
	DiskWriteBlocking bool
	// MaxBandwidthMiB, when set, is libvirt's bandwidth parameter (MiB/s).
	MaxBandwidthMiB uint64
	// DowntimeLimitMS, when set, is the user's downtime limit.
	DowntimeLimitMS uint64
	Probe           *probe.Config
	Policy          stopcopy.Policy
	AllowUnsafeTCG  bool
	PollInterval    time.Duration
	StartTimeout    time.Duration
	Progress        func(Progress)
	Log             *zap.Logger
}

// socketListener is a Transport that listens at a socket path it is
// given: libvirt's migration URI names the path.
type socketListener interface{ ListenAt(path string) }

// LibvirtError is an error libvirt reported, with its code kept.
type LibvirtError struct {
	Code    libvirt.ErrorNumber
	Message string
}

func (e *LibvirtError) Error() string { return e.Message }

// lverr turns a libvirt error into a LibvirtError (libvirt's own text
// is a Go struct dump).
func lverr(err error) error {
	var le libvirt.Error
	if errors.As(err, &le) {
		return &LibvirtError{Code: le.Code, Message: le.Message}
	}
	return err
}

func isLibvirtCode(err error, code libvirt.ErrorNumber) bool {
	var le *LibvirtError
	if errors.As(err, &le) {
		return le.Code == code
	}
	var raw libvirt.Error
	return errors.As(err, &raw) && raw.Code == code
}

// Errors of the libvirt path's preflight, for errors.Is.
var (
	ErrNoDomain     = errors.New("no such domain")
	ErrDomainOnDest = errors.New("the destination already runs a domain of that name")
	ErrUnreachable  = errors.New("cannot connect to libvirt")
)

var eventLoop sync.Once

// startEventLoop runs libvirt's default event loop for the life of the
// process: libvirt's events and connection keepalives need it, and it can
// be registered only once. Its goroutine never exits.
func startEventLoop() {
	eventLoop.Do(func() {
		if err := libvirt.EventRegisterDefaultImpl(); err != nil {
			return
		}
		go func() {
			for {
				libvirt.EventRunDefaultImpl()
			}
		}()
	})
}

// virtControl steers the source domain's migration through libvirt.
type virtControl struct{ dom *libvirt.Domain }

func (v virtControl) DowntimeLimit(ctx context.Context) (uint64, error) {
	ms, err := v.dom.MigrateGetMaxDowntime(0)
	if err != nil {
		return 0, fmt.Errorf("migrate-getmaxdowntime: %w", lverr(err))
	}
	return ms, nil
}

func (v virtControl) SetDowntimeLimit(ctx context.Context, ms uint64) error {
	if err := v.dom.MigrateSetMaxDowntime(ms, 0); err != nil {
		return fmt.Errorf("migrate-setmaxdowntime %d: %w", ms, lverr(err))
	}
	return nil
}

// virtRunner is the state of one RunLibvirt.
type virtRunner struct {
	driver
	o          LibvirtOptions
	src, dst   *libvirt.Connect
	dom        *libvirt.Domain
	destExists bool // the destination had the domain defined before
	iters      chan int
	stopped    chan struct{} // closed when the source domain was suspended for the switchover
	stopOnce   sync.Once
	completed  chan *libvirt.DomainJobInfo
	callbacks  []int
}

// RunLibvirt migrates a libvirt domain. The Result is the one Run gives;
// the error is an *Error.
func RunLibvirt(ctx context.Context, o LibvirtOptions) (Result, error) {
	if o.PollInterval <= 0 {
		o.PollInterval = DefaultPollInterval
	}
	if o.StartTimeout <= 0 {
		o.StartTimeout = DefaultStartTimeout
	}
	if o.ListenSocket == "" {
		o.ListenSocket = o.StreamSocket
	}
	if o.ForwardSocket == "" {
		o.ForwardSocket = o.StreamSocket
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	startEventLoop()
	r := &virtRunner{o: o, iters: make(chan int, eventBacklogCapacity), stopped: make(chan struct{}), completed: make(chan *libvirt.DomainJobInfo, 1)}
	r.driver = newDriver(nil, o.Progress, o.Log)
	r.setPolicy(o.Policy)
	err := r.run(ctx)
	r.close()
	return r.finish(err)
}

func (r *virtRunner) close() {
	if r.src != nil {
		for _, id := range r.callbacks {
			r.src.DomainEventDeregister(id)
		}
	}
	if r.dom != nil {
		r.dom.Free()
	}
	for _, c := range []*libvirt.Connect{r.src, r.dst} {
		if c != nil {
			c.Close()
		}
	}
}

func connect(ctx context.Context, side, uri string) (*libvirt.Connect, error) {
	type res struct {
		c   *libvirt.Connect
		err error
	}
	ch := make(chan res, 1)
	go func() { // ends when libvirt returns; a late connection is closed
		c, err := libvirt.NewConnect(uri)
		ch <- res{c, err}
	}()
	select {
	case x := <-ch:
		if x.err != nil {
			return nil, fmt.Errorf("%s %s: %w: %w", side, uri, ErrUnreachable, lverr(x.err))
		}
		// Keepalives notice a daemon that died while a call waits on it.
		x.c.SetKeepAlive(5, 3)
		return x.c, nil
	case <-ctx.Done():
		go func() {
			if x := <-ch; x.c != nil {
				x.c.Close()
			}
		}()
		return nil, fmt.Errorf("%s %s: %w: %w", side, uri, ErrUnreachable, ctx.Err())
	}
}

func (r *virtRunner) run(ctx context.Context) error {
	r.phase = PhasePreflight
	r.emit(Progress{})
	if err := r.preflight(ctx); err != nil {
		return &Error{Stage: StagePreflight, SourceRunning: !errors.Is(err, ErrSourceNotRunning) && r.dom != nil, Cancelled: ctx.Err() != nil, Err: err}
	}

	r.phase = PhaseSetup
	r.emit(Progress{})
	params := &libvirt.DomainMigrateParameters{}
	if r.o.StreamSocket != "" {
		t := r.o.Transport
		if t == nil {
			t = &RelayTransport{}
		}
		sl, ok := t.(socketListener)
		if !ok {
			return r.fail(ctx, StagePrecopy, fmt.Errorf("the %s path cannot listen at %s", t.Name(), r.o.ListenSocket))
		}
		sl.ListenAt(r.o.ListenSocket)
		if len(r.o.Disks) > 0 {
			c, ok := t.(diskCarrier)
			if !ok {
				return r.fail(ctx, StagePrecopy, fmt.Errorf("disks: the %s path cannot carry them: give a --wan-* flag, --codec on or --tunnel-peer", t.Name()))
			}
			nbd := func(s string) string { return filepath.Join(filepath.Dir(s), "nbd.sock") }
			if _, err := c.CarryDisk(diskChannel("all"), nbd(r.o.ListenSocket), "unix:"+nbd(r.o.ForwardSocket)); err != nil {
				return r.fail(ctx, StagePrecopy, fmt.Errorf("disks: %w", err))
			}
		}
		uri, err := t.Open(ctx, "unix:"+r.o.ForwardSocket)
		if err != nil {
			return r.fail(ctx, StagePrecopy, fmt.Errorf("%s path: %w", t.Name(), err))
		}
		r.transport = t // closed by finish
		if uri != "unix:"+r.o.ListenSocket {
			return r.fail(ctx, StagePrecopy, fmt.Errorf("%s path listens at %s, not at %s where the source QEMU will connect", t.Name(), uri, r.o.ListenSocket))
		}
		params.URISet, params.URI = true, "unix://"+r.o.StreamSocket
	}
	if len(r.o.Disks) > 0 {
		if r.o.StreamSocket == "" {
			return r.fail(ctx, StagePrecopy, errors.New("disks: vmigrate carries them through its tunnel only: give a --wan-* flag, --codec on or --tunnel-peer"))
		}
		params.MigrateDisksSet, params.MigrateDisks = true, r.o.Disks
		params.DisksURISet, params.DisksURI = true, "unix://"+filepath.Join(filepath.Dir(r.o.StreamSocket), "nbd.sock")
	}
	if r.o.MaxBandwidthMiB > 0 {
		params.BandwidthSet, params.Bandwidth = true, r.o.MaxBandwidthMiB
	}
	if r.o.DowntimeLimitMS > 0 {
		if err := r.ctl.SetDowntimeLimit(ctx, r.o.DowntimeLimitMS); err != nil {
			return r.fail(ctx, StagePrecopy, fmt.Errorf("source: %w", err))
		}
	}
	defer r.restoreQEMU(ctx)
	if err := r.holdQEMU(ctx); err != nil {
		return r.fail(ctx, StagePrecopy, err)
	}
	if err := r.register(); err != nil {
		return r.fail(ctx, StagePrecopy, err)
	}

	flags := libvirt.MIGRATE_LIVE
	if len(r.o.Disks) > 0 {
		flags |= libvirt.MIGRATE_NON_SHARED_DISK
		if r.o.DiskWriteBlocking {
			flags |= libvirt.MIGRATE_NON_SHARED_SYNCHRONOUS_WRITES
		}
	}
	if !r.o.Transient {
		flags |= libvirt.MIGRATE_PERSIST_DEST
	}
	if !r.o.KeepSource {
		flags |= libvirt.MIGRATE_UNDEFINE_SOURCE
	}
	done := make(chan error, 1)
	r.ps.migrateStart = time.Now()
	r.phase = PhasePrecopy
	go func() { // ends when libvirt's migration call returns
		if r.o.P2P {
			done <- r.dom.MigrateToURI3(r.o.DstURI, params, flags|libvirt.MIGRATE_PEER2PEER)
			return
		}
		d, err := r.dom.Migrate3(r.dst, params, flags)
		if d != nil {
			d.Free()
		}
		done <- err
	}()
	prober := r.startProbe(ctx, r.o.Probe)
	defer r.stopProbe(prober)
	if err := r.monitor(ctx, done); err != nil {
		return err
	}
	r.ps.saved = nil // the source domain is gone: nothing to restore
	if err := r.confirm(ctx); err != nil {
		return err
	}
	if err := r.probeAnswered(ctx, prober, r.o.StartTimeout); err != nil {
		return r.fail(ctx, StageAfter, err)
	}
	return nil
}

// preflight checks both hosts and changes nothing.
func (r *virtRunner) preflight(ctx context.Context) error {
	if r.o.Domain == "" {
		return errors.New("no domain named")
	}
	var err error
	if r.src, err = connect(ctx, "source", r.o.SrcURI); err != nil {
		return err
	}
	if r.dst, err = connect(ctx, "destination", r.o.DstURI); err != nil {
		return err
	}
	if su, du := hostUUID(r.src), hostUUID(r.dst); su != "" && su == du {
		return fmt.Errorf("source and destination are the same libvirt host (host UUID %s)", su)
	}
	r.dom, err = r.src.LookupDomainByName(r.o.Domain)
	if err != nil {
		if isLibvirtCode(err, libvirt.ERR_NO_DOMAIN) {
			return fmt.Errorf("source %s: %w %q", r.o.SrcURI, ErrNoDomain, r.o.Domain)
		}
		return fmt.Errorf("source: lookup %q: %w", r.o.Domain, lverr(err))
	}
	r.ctl = virtControl{r.dom}
	st, _, err := r.dom.GetState()
	if err != nil {
		return fmt.Errorf("source: domain state: %w", lverr(err))
	}
	if st != libvirt.DOMAIN_RUNNING {
		return fmt.Errorf("source: domain %q: %w (state %s)", r.o.Domain, ErrSourceNotRunning, stateName(st))
	}
	if dd, err := r.dst.LookupDomainByName(r.o.Domain); err == nil {
		active, _ := dd.IsActive()
		dd.Free()
		if active {
			return fmt.Errorf("destination %s: %w (%q)", r.o.DstURI, ErrDomainOnDest, r.o.Domain)
		}
		r.destExists = true
	} else if !isLibvirtCode(err, libvirt.ERR_NO_DOMAIN) {
		return fmt.Errorf("destination: lookup %q: %w", r.o.Domain, lverr(err))
	}
	if job, err := r.dom.GetJobStats(0); err == nil && job.Type != libvirt.DOMAIN_JOB_NONE {
		return fmt.Errorf("source: %w (libvirt job type %d)", ErrBusy, job.Type)
	}
	r.res.SourceQEMU, r.res.DestQEMU = hypervisorVersion(r.src), hypervisorVersion(r.dst)
	return r.checkTCG()
}

// checkTCG refuses a TCG source on QEMU < 9.0 (see Run's checkTCG). Only
// a TCG domain (type 'qemu') is asked for its version, through libvirt's
// monitor pass-through, which marks the domain tainted.
func (r *virtRunner) checkTCG() error {
	x, err := r.dom.GetXMLDesc(0)
	if err != nil {
		return fmt.Errorf("source: domain XML: %w", lverr(err))
	}
	if !strings.Contains(x, "<domain type='qemu'") && !strings.Contains(x, `<domain type="qemu"`) {
		return nil
	}
	out, err := r.dom.QemuMonitorCommand(`{"execute":"query-version"}`, libvirt.DOMAIN_QEMU_MONITOR_COMMAND_DEFAULT)
	if err != nil {
		return fmt.Errorf("source: query-version: %w", lverr(err))
	}
	var reply struct {
		Return struct {
			QEMU struct{ Major, Minor, Micro int } `json:"qemu"`
		} `json:"return"`
	}
	if err := json.Unmarshal([]byte(out), &reply); err != nil {
		return fmt.Errorf("source: query-version: %w", err)
	}
	q := reply.Return.QEMU
	v := qmp.Version{Major: q.Major, Minor: q.Minor, Micro: q.Micro}
	r.res.SourceQEMU = v.String()
	if r.o.AllowUnsafeTCG || v.AtLeast(9, 0) {
		return nil
	}
	return fmt.Errorf("source: %w: QEMU %s runs this domain under TCG, and QEMU before 9.0 loses guest writes during a TCG live migration; use KVM or QEMU 9.0 or later, or --allow-unsafe-tcg to migrate anyway", ErrUnsafeTCG, v)
}

func hostUUID(c *libvirt.Connect) string {
	x, err := c.GetCapabilities()
	if err != nil {
		return ""
	}
	_, rest, ok := strings.Cut(x, "<uuid>")
	if !ok {
		return ""
	}
	u, _, _ := strings.Cut(rest, "</uuid>")
	return u
}

// hypervisorVersion is the daemon's QEMU version (of its default
// emulator), as "major.minor.micro".
func hypervisorVersion(c *libvirt.Connect) string {
	v, err := c.GetVersion()
	if err != nil || v == 0 {
		return "unknown"
	}
	return fmt.Sprintf("%d.%d.%d", v/1000000, v/1000%1000, v%1000)
}

func stateName(s libvirt.DomainState) string {
	switch s {
	case libvirt.DOMAIN_RUNNING:
		return "running"
	case libvirt.DOMAIN_PAUSED:
		return "paused"
	case libvirt.DOMAIN_SHUTOFF:
		return "shut off"
	case libvirt.DOMAIN_SHUTDOWN:
		return "shutting down"
	case libvirt.DOMAIN_CRASHED:
		return "crashed"
	case libvirt.DOMAIN_PMSUSPENDED:
		return "pm-suspended"
	case libvirt.DOMAIN_BLOCKED:
		return "blocked"
	}
	return "no state"
}

// register subscribes to the source domain's migration iterations, its
// suspension at the switchover and its job's completion.
func (r *virtRunner) register() error {
	id, err := r.src.DomainEventMigrationIterationRegister(r.dom, func(_ *libvirt.Connect, _ *libvirt.Domain, ev *libvirt.DomainEventMigrationIteration) {
		select {
		case r.iters <- ev.Iteration:
		default: // the counters of a later pass carry the news
		}
	})
	if err != nil {
		return fmt.Errorf("source: migration iteration events: %w", lverr(err))
	}
	r.callbacks = append(r.callbacks, id)
	id, err = r.src.DomainEventLifecycleRegister(r.dom, func(_ *libvirt.Connect, _ *libvirt.Domain, ev *libvirt.DomainEventLifecycle) {
		if ev.Event == libvirt.DOMAIN_EVENT_SUSPENDED && libvirt.DomainEventSuspendedDetailType(ev.Detail) == libvirt.DOMAIN_EVENT_SUSPENDED_MIGRATED {
			r.stopOnce.Do(func() { close(r.stopped) })
		}
	})
	if err != nil {
		return fmt.Errorf("source: lifecycle events: %w", lverr(err))
	}
	r.callbacks = append(r.callbacks, id)
	id, err = r.src.DomainEventJobCompletedRegister(r.dom, func(_ *libvirt.Connect, _ *libvirt.Domain, ev *libvirt.DomainEventJobCompleted) {
		info := ev.Info
		select {
		case r.completed <- &info:
		default:
		}
	})
	if err != nil {
		return fmt.Errorf("source: job completed events: %w", lverr(err))
	}
	r.callbacks = append(r.callbacks, id)
	return nil
}

// jobRAM turns libvirt's job statistics into QEMU's RAM counters.
func jobRAM(j *libvirt.DomainJobInfo) *qmp.RAMStats {
	return &qmp.RAMStats{
		Total: int64(j.MemTotal), Remaining: int64(j.MemRemaining), Transferred: int64(j.MemProcessed),
		DirtyPagesRate: int64(j.MemDirtyRate), PageSize: int64(j.MemPageSize), DirtySyncCount: int64(j.MemIteration),
		Mbps: float64(j.MemBps) * 8 / 1e6,
	}
}

// absorb takes one reading of the job's statistics.
func (r *virtRunner) absorb(j *libvirt.DomainJobInfo) *qmp.RAMStats {
	ram := jobRAM(j)
	if j.SetupTimeSet {
		r.res.SetupMS = int64(j.SetupTime)
	}
	if j.TimeElapsedSet {
		r.res.QEMUTotal = int64(j.TimeElapsed)
	}
	if j.DowntimeSet {
		r.res.DowntimeMS = int64(j.Downtime)
	}
	if j.MemTotalSet {
		r.res.RAMBytes = ram.Total
		r.res.RAMTransferred = ram.Transferred
	}
	if j.DiskTotalSet && len(r.o.Disks) > 0 {
		d := blockmirror.DiskStats{Disk: strings.Join(r.o.Disks, ","), Bytes: int64(j.DiskTotal), Done: int64(j.DiskProcessed), Status: "libvirt"}
		if c, ok := r.transport.(diskCarrier); ok {
			d.SentBytes = c.ChannelBytes(diskChannel("all"))
		}
		if cs, ok := r.transport.(diskCodecCounter); ok {
			d.Codec = cs.DiskCodecStats(diskChannel("all"))
		}
		r.res.Disks = []blockmirror.DiskStats{d}
		r.log.Debug("libvirt disk copy", zap.Int64("total", d.Bytes), zap.Int64("done", d.Done), zap.Int64("sent", d.SentBytes))
	}
	if int(ram.DirtySyncCount) > r.pass {
		r.pass = int(ram.DirtySyncCount)
	}
	r.emit(Progress{RemainingBytes: ram.Remaining, TransferredBytes: ram.Transferred, TotalBytes: ram.Total, Mbps: ram.Mbps})
	return ram
}

// monitor follows the job until libvirt's migration call returns.
func (r *virtRunner) monitor(ctx context.Context, done <-chan error) error {
	tick := time.NewTicker(r.o.PollInterval)
	defer tick.Stop()
	held := false
	var abortErr error
	abort := func(cause error) {
		if abortErr == nil {
			abortErr = cause
			if err := r.dom.AbortJob(); err != nil {
				r.log.Warn("source: abort the migration job", zap.Error(lverr(err)))
			}
		}
	}
	for {
		select {
		case <-ctx.Done():
			abort(fmt.Errorf("interrupted: %w", ctx.Err()))
			ctx = context.WithoutCancel(ctx) // go on until libvirt returns
		case <-r.stopped:
			r.stopped = nil
			if r.res.SwitchoverMS == 0 {
				r.res.SwitchoverMS = time.Since(r.start).Milliseconds()
			}
			r.phase = PhaseSwitchover
			r.emit(Progress{})
		case it := <-r.iters:
			j, err := r.dom.GetJobStats(0)
			if err != nil || j.Type == libvirt.DOMAIN_JOB_NONE {
				continue
			}
			ram := r.absorb(j)
			if it > r.pass {
				r.pass = it
			}
			if err := r.addPass(ctx, it, ram, r.phase == PhasePrecopy && abortErr == nil); err != nil {
				abort(err)
			}
		case <-tick.C:
			j, err := r.dom.GetJobStats(0)
			if err != nil || j.Type == libvirt.DOMAIN_JOB_NONE {
				continue
			}
			if !held && r.ps.hold {
				// libvirt may have set its own parameters when the job
				// began: hold again once it runs.
				held = true
				if !r.ps.decided {
					if err := r.ctl.SetDowntimeLimit(ctx, holdDowntimeMS); err != nil {
						abort(fmt.Errorf("source: hold pre-copy: %w", err))
					}
				}
			}
			ram := r.absorb(j)
			if r.phase == PhasePrecopy && abortErr == nil {
				if err := r.between(ctx, ram); err != nil {
					abort(err)
				}
			}
		case err := <-done:
			r.takeCompleted()
			switch {
			case abortErr != nil:
				return r.fail(ctx, r.stage(), abortErr)
			case err != nil:
				return r.fail(ctx, r.stage(), fmt.Errorf("libvirt: %w", lverr(err)))
			}
			r.phase = PhaseCompleted
			return nil
		}
	}
}

func (r *virtRunner) stage() string {
	if r.phase == PhaseSwitchover || r.res.SwitchoverMS > 0 {
		return StageSwitchover
	}
	return StagePrecopy
}

// takeCompleted reads the finished job's statistics: from the event, or
// from the source's completed job, or from the destination's.
func (r *virtRunner) takeCompleted() {
	var j *libvirt.DomainJobInfo
	select {
	case j = <-r.completed:
	case <-time.After(200 * time.Millisecond):
	}
	if j == nil {
		if s, err := r.dom.GetJobStats(libvirt.DOMAIN_JOB_STATS_COMPLETED); err == nil && s.Type != libvirt.DOMAIN_JOB_NONE {
			j = s
		}
	}
	if j == nil {
		if dd, err := r.dst.LookupDomainByName(r.o.Domain); err == nil {
			if s, err := dd.GetJobStats(libvirt.DOMAIN_JOB_STATS_COMPLETED); err == nil && s.Type != libvirt.DOMAIN_JOB_NONE {
				j = s
			}
			dd.Free()
		}
	}
	if j != nil {
		r.absorb(j)
	}
}

// confirm checks that the domain runs on the destination and no longer
// on the source.
func (r *virtRunner) confirm(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, r.o.StartTimeout)
	defer cancel()
	for {
		st, err := domainState(r.dst, r.o.Domain)
		if err == nil && st == libvirt.DOMAIN_RUNNING {
			r.res.DestStatus = "running"
			break
		}
		select {
		case <-cctx.Done():
			return r.fail(ctx, StageAfter, fmt.Errorf("%w within %s (state %s)", ErrDestLost, r.o.StartTimeout, stateOrErr(st, err)))
		case <-time.After(stateSettleInterval):
		}
	}
	st, err := domainState(r.src, r.o.Domain)
	switch {
	case isLibvirtCode(err, libvirt.ERR_NO_DOMAIN):
		r.res.SourceStatus = "undefined"
	case err != nil:
		r.res.SourceStatus = "unknown"
	default:
		r.res.SourceStatus = stateName(st)
	}
	return nil
}

func stateOrErr(st libvirt.DomainState, err error) string {
	if err != nil {
		return lverr(err).Error()
	}
	return stateName(st)
}

func domainState(c *libvirt.Connect, name string) (libvirt.DomainState, error) {
	d, err := c.LookupDomainByName(name)
	if err != nil {
		return 0, err
	}
	defer d.Free()
	st, _, err := d.GetState()
	return st, err
}

// fail makes sure the domain runs on the source and that the migration
// left nothing on the destination. libvirt itself cancels the job,
// resumes the source and kills the destination's QEMU on most failures;
// this covers the rest (a source left paused, a destination definition).
func (r *virtRunner) fail(ctx context.Context, stage string, cause error) error {
	r.phase = PhaseFailed
	cancelled := ctx.Err() != nil || errors.Is(cause, context.Canceled)
	if cancelled {
		r.phase = PhaseCancelled
	}
	if r.transport != nil {
		if terr := r.transport.Err(); terr != nil && !errors.Is(terr, context.Canceled) {
			cause = fmt.Errorf("%w (%s path: %v)", cause, r.transport.Name(), terr)
		}
	}
	e := &Error{Stage: stage, Cancelled: cancelled, Err: cause}
	srcSt, srcErr := domainState(r.src, r.o.Domain)
	dstSt, dstErr := domainState(r.dst, r.o.Domain)
	if dstErr == nil && dstSt == libvirt.DOMAIN_RUNNING && (srcErr != nil || srcSt != libvirt.DOMAIN_RUNNING) {
		// libvirt finished the move although vmigrate saw a failure.
		e.VMOnDest = true
		r.res.SourceStatus = stateOrErr(srcSt, srcErr)
		r.res.DestStatus = "running"
		r.emit(Progress{})
		return e
	}
	var notes []string
	if srcErr == nil && srcSt == libvirt.DOMAIN_PAUSED {
		if err := r.dom.Resume(); err != nil {
			notes = append(notes, "resuming the source failed: "+lverr(err).Error())
		} else {
			r.log.Warn("resumed the source domain after the failed migration")
			srcSt, srcErr = domainState(r.src, r.o.Domain)
		}
	}
	e.SourceRunning = srcErr == nil && srcSt == libvirt.DOMAIN_RUNNING
	r.res.SourceStatus = stateOrErr(srcSt, srcErr)
	if note := r.cleanDest(); note != "" {
		notes = append(notes, note)
	}
	if len(notes) > 0 {
		e.Err = fmt.Errorf("%w; %s", e.Err, strings.Join(notes, "; "))
	}
	r.emit(Progress{})
	return e
}

// cleanDest removes a domain the failed migration left on the
// destination (and only one it made: a definition that was there before
// stays). It returns a note when something could not be removed.
func (r *virtRunner) cleanDest() string {
	d, err := r.dst.LookupDomainByName(r.o.Domain)
	if err != nil {
		if isLibvirtCode(err, libvirt.ERR_NO_DOMAIN) {
			return ""
		}
		return "the destination could not be checked for leftovers: " + lverr(err).Error()
	}
	defer d.Free()
	if active, _ := d.IsActive(); active {
		if err := d.Destroy(); err != nil {
			return "the destination's half-migrated domain could not be destroyed: " + lverr(err).Error()
		}
	}
	if r.destExists {
		return ""
	}
	if persistent, _ := d.IsPersistent(); persistent {
		if err := d.Undefine(); err != nil {
			return "the destination's domain definition could not be removed: " + lverr(err).Error()
		}
	}
	r.log.Warn("removed the half-migrated domain from the destination")
	return ""
}
