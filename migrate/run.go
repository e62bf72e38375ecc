// Package migrate drives one pre-copy live migration between two QEMUs
// over QMP and reports what happened.
//
// The flow of Run:
//
//	preflight: source running, destination in incoming mode (-incoming
//	           defer), no migration under way; nothing is changed until
//	           all of that holds.
//	prepare:   the events capability on both sides; migrate-incoming on
//	           the destination.
//	precopy:   migrate on the source; every MIGRATION_PASS is recorded
//	           with the counters read right after it; query-migrate is
//	           polled for progress.
//	switchover: QEMU stops the source (STOP) and sends the rest.
//	after:     the destination must reach "running" and the source
//	           "postmigrate".
//
// Any failure before the destination runs cancels the migration and makes
// sure the source VM runs again: a failed migration leaves it running with
// its memory intact.
package migrate

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/vmigrate/vmigrate/migstream"
	"github.com/vmigrate/vmigrate/pagecodec"
	"github.com/vmigrate/vmigrate/probe"
	"github.com/vmigrate/vmigrate/qmp"
	"github.com/vmigrate/vmigrate/stopcopy"
)

// Defaults for Options.
const (
	DefaultPollInterval  = 200 * time.Millisecond
	DefaultStartTimeout  = 30 * time.Second
	cleanupTimeout       = 15 * time.Second
	stateSettleTimeout   = 10 * time.Second
	stateSettleInterval  = 50 * time.Millisecond
	eventBacklogCapacity = 64
)

// Options configure Run.
type Options struct {
	Src, Dst *qmp.Client
	// IncomingURI is where the destination listens (migrate-incoming).
	IncomingURI string
	// SourceURI is where the source sends the stream; it differs from
	// IncomingURI when a relay or tunnel sits between. Default IncomingURI.
	SourceURI string
	// Transport, when set, carries the stream from the source to the
	// destination's incoming socket and counts it (the WAN path).
	Transport Transport
	// RelayDir, when set, Transport unset and the destination listening on
	// a unix socket, puts a counting Relay (its socket in RelayDir) between
	// the two, so stream_bytes is exact. Both QEMUs must be on this host.
	RelayDir string
	// Parameters are applied to the source before it starts.
	Parameters *qmp.MigrationParameters
	// Probe, when set, measures the downtime a client of the guest sees:
	// it runs from the start of the migration until the guest answers
	// after the switchover (Result.ObservedDowntimeMS).
	Probe *probe.Config
	// Policy decides when pre-copy stops (stopcopy). Nil, or
	// stopcopy.QEMU, leaves it to QEMU's own downtime limit; any other
	// rule holds QEMU in pre-copy with a 1 ms limit and forces the
	// stop-and-copy when the rule says so; the user's limit is restored
	// afterwards.
	Policy stopcopy.Policy
	// Disks are block nodes (the same names on both sides, e.g. "vda")
	// mirrored to the destination before the RAM moves; the destination
	// serves its images of them over NBD on NBDSocket (a unix socket path
	// as its QEMU sees it). DiskCopyMode is the mirror's copy mode
	// (background by default), DiskConvergeAfter when a background mirror
	// not yet in sync turns write-blocking.
	Disks             []string
	NBDSocket         string
	DiskCopyMode      string
	DiskConvergeAfter time.Duration
	// AllowUnsafeTCG migrates a TCG guest even on a QEMU older than 9.0,
	// whose TCG dirty tracking loses guest writes (see ErrUnsafeTCG).
	AllowUnsafeTCG bool
	PollInterval   time.Duration
	StartTimeout   time.Duration // how long the destination may take to run after completion
	Progress       func(Progress)
	Log            *zap.Logger
}

// runner is the state of one Run.
type runner struct {
	driver
	o     Options
	seen  qmp.Cursor // the last source event monitor handled
	disks diskRun
	// shutdown is the source's SHUTDOWN event, if it sent one: QEMU is
	// exiting or stopping for good, and a failure then says why.
	shutdown *qmp.ShutdownEvent
}

// Run migrates the VM from o.Src to o.Dst. The Result is filled in
// whatever happens; the error is an *Error saying at which stage it failed
// and whether the source runs.
func Run(ctx context.Context, o Options) (Result, error) {
	if o.PollInterval <= 0 {
		o.PollInterval = DefaultPollInterval
	}
	if o.StartTimeout <= 0 {
		o.StartTimeout = DefaultStartTimeout
	}
	if o.SourceURI == "" {
		o.SourceURI = o.IncomingURI
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	r := &runner{o: o, driver: newDriver(qmpControl{o.Src}, o.Progress, o.Log)}
	r.setPolicy(o.Policy)
	r.res.SourceQEMU = o.Src.Version().String()
	r.res.DestQEMU = o.Dst.Version().String()
	return r.finish(r.run(ctx))
}

// codecReporter is a Transport with a page codec.
type codecReporter interface{ CodecStats() *pagecodec.Stats }

func (r *runner) run(ctx context.Context) error {
	r.phase = PhasePreflight
	r.emit(Progress{})
	if err := r.preflight(ctx); err != nil {
		return &Error{Stage: StagePreflight, SourceRunning: !errors.Is(err, ErrSourceNotRunning), Cancelled: ctx.Err() != nil, Err: err}
	}

	// From here on, anything that goes wrong is cleaned up by fail.
	r.phase = PhaseSetup
	r.emit(Progress{})
	if err := r.o.Dst.MigrateIncoming(ctx, r.o.IncomingURI); err != nil {
		return r.fail(ctx, StagePrecopy, fmt.Errorf("destination: migrate-incoming %s: %w", r.o.IncomingURI, err))
	}
	if r.o.Parameters != nil {
		if err := r.o.Src.MigrateSetParameters(ctx, *r.o.Parameters); err != nil {
			return r.fail(ctx, StagePrecopy, fmt.Errorf("source: migrate-set-parameters: %w", err))
		}
	}
	if err := r.resolveSourceURI(ctx); err != nil {
		return r.fail(ctx, StagePrecopy, err)
	}
	t := r.o.Transport
	if t == nil && r.o.RelayDir != "" && strings.HasPrefix(r.o.IncomingURI, "unix:") {
		t = &RelayTransport{Dir: r.o.RelayDir}
	}
	if err := r.carryDisks(t); err != nil {
		return r.fail(ctx, StagePrecopy, err)
	}
	if t != nil {
		uri, err := t.Open(ctx, r.o.SourceURI)
		if err != nil {
			return r.fail(ctx, StagePrecopy, fmt.Errorf("%s path: %w", t.Name(), err))
		}
		r.transport = t // closed by Run
		r.o.SourceURI = uri
	}
	if err := r.mirrorDisks(ctx); err != nil {
		return r.fail(ctx, StagePrecopy, fmt.Errorf("disks: %w", err))
	}
	defer r.restorePauseCap(context.WithoutCancel(ctx))
	defer r.restoreQEMU(ctx) // also after a hold that failed half way
	if err := r.holdQEMU(ctx); err != nil {
		return r.fail(ctx, StagePrecopy, err)
	}
	r.ps.migrateStart = time.Now()
	cur := r.o.Src.Cursor()
	if err := r.o.Src.Migrate(ctx, r.o.SourceURI); err != nil {
		return r.fail(ctx, StagePrecopy, fmt.Errorf("source: migrate %s: %w", r.o.SourceURI, err))
	}
	prober := r.startProbe(ctx, r.o.Probe)
	defer r.stopProbe(prober)
	if err := r.monitor(ctx, cur); err != nil {
		return err
	}
	if err := r.confirm(ctx); err != nil {
		return err
	}
	if err := r.probeAnswered(ctx, prober, r.o.StartTimeout); err != nil {
		return r.fail(ctx, StageAfter, err)
	}
	return nil
}

// resolveSourceURI learns the port a destination listening on "tcp:HOST:0"
// was given, so the source can be pointed at it.
func (r *runner) resolveSourceURI(ctx context.Context) error {
	if r.o.SourceURI != r.o.IncomingURI || !strings.HasPrefix(r.o.IncomingURI, "tcp:") || !strings.HasSuffix(r.o.IncomingURI, ":0") {
		return nil
	}
	mi, err := r.o.Dst.QueryMigrate(ctx)
	if err != nil {
		return fmt.Errorf("destination: query-migrate for the listening port: %w", err)
	}
	host := strings.TrimSuffix(strings.TrimPrefix(r.o.IncomingURI, "tcp:"), ":0")
	for _, a := range mi.SocketAddress {
		if a.Port != "" && a.Port != "0" {
			r.o.SourceURI = "tcp:" + net.JoinHostPort(strings.Trim(host, "[]"), a.Port)
			return nil
		}
	}
	return fmt.Errorf("destination: listening on %s but QEMU did not report the port it chose", r.o.IncomingURI)
}

// preflight checks both sides without changing anything but the events
// capability, which only makes QEMU report more.
func (r *runner) preflight(ctx context.Context) error {
	if len(r.o.Disks) > 0 && r.o.NBDSocket == "" {
		return errors.New("disks: no socket for the destination's NBD server")
	}
	src, err := r.o.Src.QueryStatus(ctx)
	if err != nil {
		return fmt.Errorf("source: query-status: %w", err)
	}
	dst, err := r.o.Dst.QueryStatus(ctx)
	if err != nil {
		return fmt.Errorf("destination: query-status: %w", err)
	}
	switch {
	case src.Status == "inmigrate" && dst.Running:
		return fmt.Errorf("%w: the source waits for an incoming migration and the destination runs a VM; exchange --src-qmp and --dst-qmp", ErrSwapped)
	case src.Status == "inmigrate":
		return fmt.Errorf("source: %w (it is waiting for an incoming migration itself)", ErrSourceNotRunning)
	case !src.Running:
		return fmt.Errorf("source: %w (status %s)", ErrSourceNotRunning, src.Status)
	case dst.Status != "inmigrate":
		return fmt.Errorf("destination: %w (status %s): start its QEMU with -incoming defer", ErrDestNotIncoming, dst.Status)
	}
	if err := r.checkTCG(ctx); err != nil {
		return err
	}
	if err := r.checkFormat(ctx); err != nil {
		return err
	}
	mi, err := r.o.Src.QueryMigrate(ctx)
	if err != nil {
		return fmt.Errorf("source: query-migrate: %w", err)
	}
	switch mi.Status {
	case "", "none", "completed", "failed", "cancelled":
	default:
		return fmt.Errorf("source: %w (status %s)", ErrBusy, mi.Status)
	}
	dmi, err := r.o.Dst.QueryMigrate(ctx)
	if err != nil {
		return fmt.Errorf("destination: query-migrate: %w", err)
	}
	if dmi.Status != "" && dmi.Status != "none" {
		return fmt.Errorf("destination: %w: it already has an incoming migration (status %s)", ErrDestNotIncoming, dmi.Status)
	}
	for side, c := range map[string]*qmp.Client{"source": r.o.Src, "destination": r.o.Dst} {
		if err := c.MigrateSetCapabilities(ctx, qmp.Capability{Name: "events", State: true}); err != nil {
			return fmt.Errorf("%s: migrate-set-capabilities events: %w", side, err)
		}
	}
	return nil
}

// streamParser is a Transport that reads the migration stream (the page
// codec), and so cannot carry one whose format a capability changed.
type streamParser interface{ ParsesStream() bool }

// checkFormat refuses, before anything starts, a source whose settings
// would make a stream the transport cannot parse.
func (r *runner) checkFormat(ctx context.Context) error {
	p, ok := r.o.Transport.(streamParser)
	if !ok || !p.ParsesStream() {
		return nil
	}
	caps, err := r.o.Src.QueryMigrateCapabilities(ctx)
	if err != nil {
		return fmt.Errorf("source: query-migrate-capabilities: %w", err)
	}
	var on []string
	for _, c := range caps {
		if c.State {
			on = append(on, c.Name)
		}
	}
	if err := migstream.CheckCapabilities(on); err != nil {
		return fmt.Errorf("source: %w: %w; turn them off, or migrate with --codec off", ErrStreamFormat, err)
	}
	params, err := r.o.Src.QueryMigrateParameters(ctx)
	if err != nil {
		return fmt.Errorf("source: query-migrate-parameters: %w", err)
	}
	tls := params.TLSCreds != nil && *params.TLSCreds != ""
	if q := r.o.Parameters; q != nil && q.TLSCreds != nil {
		tls = *q.TLSCreds != ""
	}
	if tls {
		return fmt.Errorf("source: %w: QEMU encrypts the stream itself (tls-creds); the tunnel already encrypts it, so clear tls-creds, or migrate with --codec off", ErrStreamFormat)
	}
	return nil
}

// checkTCG refuses a source that would corrupt the guest: TCG on a QEMU
// before 9.0 loses guest writes made between a dirty-bitmap sync and the
// next TCG TLB flush, so they never reach the destination.
func (r *runner) checkTCG(ctx context.Context) error {
	v := r.o.Src.Version()
	if r.o.AllowUnsafeTCG || v.AtLeast(9, 0) {
		return nil
	}
	k, err := r.o.Src.QueryKVM(ctx)
	if err != nil {
		return fmt.Errorf("source: query-kvm: %w", err)
	}
	if k.Enabled {
		return nil
	}
	return fmt.Errorf("source: %w: QEMU %s runs this VM under TCG, and QEMU before 9.0 loses guest writes during a TCG live migration (the dirty bitmap sync leaves TCG's TLB stale); use KVM or QEMU 9.0 or later, or --allow-unsafe-tcg to migrate anyway", ErrUnsafeTCG, v)
}

// monitor follows the source until its migration reaches a final state.
func (r *runner) monitor(ctx context.Context, cur qmp.Cursor) error {
	evctx, stop := context.WithCancel(ctx)
	defer stop()
	r.seen = cur
	events := make(chan qmp.Event, eventBacklogCapacity)
	evErr := make(chan error, 1)
	go func() { // exits when evctx ends or the client fails
		for {
			ev, err := r.o.Src.NextEvent(evctx, &cur)
			if err != nil {
				evErr <- err
				return
			}
			select {
			case events <- ev:
			case <-evctx.Done():
				return
			}
		}
	}()
	tick := time.NewTicker(r.o.PollInterval)
	defer tick.Stop()
	r.phase = PhasePrecopy
	for {
		select {
		case <-ctx.Done():
			return r.fail(ctx, r.stage(), fmt.Errorf("interrupted: %w", ctx.Err()))
		case err := <-evErr:
			if ctx.Err() != nil {
				continue // the ctx.Done branch reports it
			}
			r.noteShutdown(ctx, events) // a SHUTDOWN read just before the end says why
			return r.fail(ctx, r.stage(), fmt.Errorf("source: QMP events: %w", err))
		case ev := <-events:
			if done, err := r.onEvent(ctx, ev); done {
				return err
			}
		case <-tick.C:
			mi, err := r.o.Src.QueryMigrate(ctx)
			if err != nil {
				if ctx.Err() != nil {
					continue
				}
				return r.fail(ctx, r.stage(), fmt.Errorf("source: query-migrate: %w", err))
			}
			r.absorb(mi)
			if mi.Status == qmp.MigrationStatusActive {
				if err := r.between(ctx, mi.RAM); err != nil {
					return r.fail(ctx, r.stage(), err)
				}
			}
			if qmp.MigrationFinished(mi.Status) {
				// QEMU sent the events of the migration's end (its
				// last passes, STOP) before this answer: handle them
				// first, or the result misses them.
				if done, err := r.drainEvents(ctx, events, evErr, r.o.Src.Cursor()); done {
					return err
				}
			}
			if done, err := r.onStatus(ctx, mi.Status); done {
				return err
			}
		}
	}
}

// onEvent reacts to one event of the source; done reports that the
// migration has ended.
func (r *runner) onEvent(ctx context.Context, ev qmp.Event) (done bool, err error) {
	r.seen = qmp.Cursor(ev.Seq)
	switch ev.Name {
	case qmp.EventShutdown:
		if sd, err := ev.Shutdown(); err == nil {
			r.shutdown = &sd
		}
	case qmp.EventStop:
		r.phase = PhaseSwitchover
		r.res.SwitchoverMS = time.Since(r.start).Milliseconds()
	case qmp.EventMigrationPass:
		p, err := ev.MigrationPass()
		if err != nil {
			return false, nil
		}
		r.pass = p.Pass
		if err := r.recordPass(ctx, p.Pass); err != nil {
			return true, r.fail(ctx, r.stage(), err)
		}
	case qmp.EventMigration:
		m, err := ev.Migration()
		if err != nil {
			return false, nil
		}
		return r.onStatus(ctx, m.Status)
	}
	return false, nil
}

// noteShutdown hands onEvent a SHUTDOWN among the events queued when the
// event stream failed, to record it; the others no longer matter.
func (r *runner) noteShutdown(ctx context.Context, events <-chan qmp.Event) {
	for {
		select {
		case ev := <-events:
			if ev.Name == qmp.EventShutdown {
				r.onEvent(ctx, ev)
			}
		default:
			return
		}
	}
}

// drainEvents handles the queued events up to end. If the event stream
// has failed, the caller goes on without them.
func (r *runner) drainEvents(ctx context.Context, events <-chan qmp.Event, evErr <-chan error, end qmp.Cursor) (done bool, err error) {
	for r.seen < end {
		select {
		case ev := <-events:
			if done, err := r.onEvent(ctx, ev); done {
				return true, err
			}
		case <-evErr:
			return false, nil
		case <-ctx.Done():
			return true, r.fail(ctx, r.stage(), fmt.Errorf("interrupted: %w", ctx.Err()))
		}
	}
	return false, nil
}

func (r *runner) stage() string {
	if r.phase == PhaseSwitchover {
		return StageSwitchover
	}
	return StagePrecopy
}

// onStatus reacts to a source migration status; done reports a final one.
func (r *runner) onStatus(ctx context.Context, status string) (done bool, err error) {
	switch status {
	case "completed":
		mi, err := r.o.Src.QueryMigrate(ctx)
		if err != nil {
			return true, r.fail(ctx, StageAfter, fmt.Errorf("source: query-migrate: %w", err))
		}
		r.phase = PhaseCompleted
		r.absorb(mi)
		return true, nil
	case "failed":
		mi, _ := r.o.Src.QueryMigrate(ctx)
		desc := mi.ErrorDesc
		if desc == "" {
			desc = "QEMU gave no reason"
		}
		return true, r.fail(ctx, r.stage(), fmt.Errorf("qemu reports failure after %d passes, %s of %s sent: %s",
			r.pass, mib(r.res.RAMTransferred), mib(r.res.RAMBytes), desc))
	case "cancelled":
		return true, r.fail(ctx, r.stage(), errors.New("migration cancelled on the source by someone else"))
	case "pre-switchover", "device":
		r.phase = PhaseSwitchover
		if status == "pre-switchover" {
			if err := r.switchDisks(ctx); err != nil {
				return true, r.fail(ctx, StageSwitchover, fmt.Errorf("disks: %w", err))
			}
		}
	}
	return false, nil
}

// absorb takes the counters of one query-migrate.
func (r *runner) absorb(mi qmp.MigrationInfo) {
	if mi.SetupTime != nil {
		r.res.SetupMS = *mi.SetupTime
	}
	if mi.TotalTime != nil {
		r.res.QEMUTotal = *mi.TotalTime
	}
	if mi.Downtime != nil {
		r.res.DowntimeMS = *mi.Downtime
	}
	p := Progress{}
	if ram := mi.RAM; ram != nil {
		r.res.RAMBytes = ram.Total
		r.res.RAMTransferred = ram.Transferred
		if ram.DirtySyncCount > int64(r.pass) {
			r.pass = int(ram.DirtySyncCount)
		}
		p = Progress{RemainingBytes: ram.Remaining, TransferredBytes: ram.Transferred, TotalBytes: ram.Total, Mbps: ram.Mbps}
	}
	r.emit(p)
}

// recordPass reads the counters right after a bitmap sync.
func (r *runner) recordPass(ctx context.Context, pass int) error {
	mi, err := r.o.Src.QueryMigrate(ctx)
	if err != nil {
		return fmt.Errorf("source: query-migrate after pass %d: %w", pass, err)
	}
	// The policy learns every pass, but decides only while pre-copy is
	// under way: not on the setup sync, nor on one read after the end.
	r.absorb(mi)
	return r.addPass(ctx, pass, mi.RAM, mi.Status == qmp.MigrationStatusActive)
}

// confirm waits for the destination to run and the source to stop. If the
// destination does not start, the source is resumed: the VM keeps running
// somewhere.
func (r *runner) confirm(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, r.o.StartTimeout)
	defer cancel()
	var last string
	for {
		st, err := r.o.Dst.QueryStatus(cctx)
		if err == nil {
			last = st.Status
			if st.Running {
				break
			}
		}
		if err != nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
			return r.fail(ctx, StageAfter, fmt.Errorf("%w: destination: query-status: %v", ErrDestLost, err))
		}
		select {
		case <-cctx.Done():
			return r.fail(ctx, StageAfter, fmt.Errorf("%w within %s (status %q)", ErrDestLost, r.o.StartTimeout, last))
		case <-time.After(stateSettleInterval):
		}
	}
	r.res.DestStatus = last
	src, err := r.o.Src.QueryStatus(ctx)
	if err != nil {
		r.res.SourceStatus = "unknown"
		r.o.Log.Warn("source: query-status after completion", zap.Error(err))
		return nil
	}
	r.res.SourceStatus = src.Status
	if src.Running {
		// Both would run the VM: never leave that so.
		return r.fail(ctx, StageAfter, errors.New("source still runs after completion"))
	}
	return nil
}

// fail cancels what is under way and makes sure the source VM runs. It
// uses its own context: cleanup must happen even after ctx was cancelled.
func (r *runner) fail(ctx context.Context, stage string, cause error) error {
	r.phase = PhaseFailed
	cancelled := ctx.Err() != nil
	if cancelled {
		r.phase = PhaseCancelled
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	if r.transport != nil {
		if terr := r.transport.Err(); terr != nil && !errors.Is(terr, context.Canceled) {
			cause = fmt.Errorf("%w (%s path: %v)", cause, r.transport.Name(), terr)
		}
	}
	if sd := r.shutdown; sd != nil {
		cause = fmt.Errorf("%w (the source QEMU shut down during the migration: reason %s, guest-initiated %t)", cause, sd.Reason, sd.Guest)
	}
	e := &Error{Stage: stage, Cancelled: cancelled, Err: cause}
	defer r.abortDisks(cctx) // after the migration is cancelled: the mirrors are its first part

	// The source's final migration status decides what is safe. Unknown
	// counts as completed: the VM may have left.
	status := "unknown"
	if mi, err := r.o.Src.QueryMigrate(cctx); err == nil {
		status = mi.Status
		if !finalStatus(mi.Status) {
			if err := r.o.Src.MigrateCancel(cctx); err != nil {
				r.o.Log.Warn("source: migrate_cancel", zap.Error(err))
			}
			// The cancel may come too late: QEMU can still complete.
			status = r.waitSourceMigration(cctx)
		}
	}
	completed := status == qmp.MigrationStatusCompleted || status == "unknown"
	// Once the source completed, the destination holds the whole VM. The
	// source is resumed only when the destination is known not to run it
	// and never will: the VM must never run twice.
	fate := destGone
	if completed {
		fate = r.destinationFate(cctx)
	}
	switch fate {
	case destRunning:
		e.VMOnDest = true // Error() says the VM runs on the destination
		if st, err := r.o.Src.QueryStatus(cctx); err == nil && st.Running {
			// Both run it: stop the source, never leave that so.
			if err := r.o.Src.Stop(cctx); err != nil {
				e.Err = fmt.Errorf("%w; THE SOURCE STILL RUNS TOO and stopping it failed: %v", e.Err, err)
			} else {
				e.Err = fmt.Errorf("%w; the source, which ran too, was stopped", e.Err)
			}
		}
	case destMayStart:
		e.Err = fmt.Errorf("%w; the destination holds the VM's state and may still start it, so the source was not resumed (source migration status %s): if the destination is gone, resume the source (QMP cont)", cause, status)
	case destGone:
		running, err := r.ensureSourceRunning(cctx)
		if err != nil {
			e.Err = fmt.Errorf("%w; and resuming the source failed: %v", cause, err)
		}
		e.SourceRunning = running
		if t := r.partialTargets(); t != "" {
			e.Err = fmt.Errorf("%w; the destination's disk images hold a partial copy, not a disk to boot: %s (remove them, or keep them as the target of the next attempt)", e.Err, t)
		}
	}
	if st, err := r.o.Src.QueryStatus(cctx); err == nil {
		r.res.SourceStatus = st.Status
	} else {
		r.res.SourceStatus = "unknown"
	}
	r.emit(Progress{})
	return e
}

// What became of the destination after the source completed.
const (
	destGone     = iota // QEMU exited, or its incoming migration failed
	destRunning         // it runs the VM
	destMayStart        // alive and not failed: it may still start the VM
)

func (r *runner) destinationFate(ctx context.Context) int {
	st, err := r.o.Dst.QueryStatus(ctx)
	switch {
	case errors.Is(err, qmp.ErrClosed) && !errors.Is(err, qmp.ErrProtocol) && r.o.Dst.Local():
		// A QEMU on this host closed its monitor: it exited. Over TCP a
		// dropped connection says nothing about the process.
		return destGone
	case err != nil:
		return destMayStart
	case st.Running:
		return destRunning
	}
	if mi, err := r.o.Dst.QueryMigrate(ctx); err == nil && mi.Status == qmp.MigrationStatusFailed {
		return destGone
	}
	return destMayStart
}

func finalStatus(s string) bool {
	switch s {
	case "", "none", "completed", "failed", "cancelled":
		return true
	}
	return false
}

// waitSourceMigration waits until a cancel has taken effect.
// It returns the final status, or "unknown".
func (r *runner) waitSourceMigration(ctx context.Context) string {
	wctx, cancel := context.WithTimeout(ctx, stateSettleTimeout)
	defer cancel()
	for {
		mi, err := r.o.Src.QueryMigrate(wctx)
		switch {
		case err != nil:
			return "unknown"
		case finalStatus(mi.Status):
			return mi.Status
		}
		select {
		case <-wctx.Done():
			return "unknown"
		case <-time.After(stateSettleInterval):
		}
	}
}

// ensureSourceRunning resumes a source that a failed switchover left
// stopped. QEMU resumes the source itself when the failure comes before
// it stopped the VM; after STOP, or when the destination failed to start
// the VM it had fully received, the source waits in "postmigrate" or
// "paused" and only cont brings it back.
func (r *runner) ensureSourceRunning(ctx context.Context) (bool, error) {
	st, err := r.o.Src.QueryStatus(ctx)
	if err != nil {
		return false, fmt.Errorf("source: query-status: %w", err)
	}
	if st.Running {
		return true, nil
	}
	switch st.Status {
	case "paused", "postmigrate", "finish-migrate":
	default:
		return false, fmt.Errorf("source is %s, not resumable by vmigrate", st.Status)
	}
	if err := r.o.Src.Cont(ctx); err != nil {
		return false, fmt.Errorf("source: cont: %w", err)
	}
	st, err = r.o.Src.QueryStatus(ctx)
	if err != nil {
		return false, fmt.Errorf("source: query-status after cont: %w", err)
	}
	r.o.Log.Warn("resumed the source VM after the failed migration", zap.String("status", st.Status))
	return st.Running, nil
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
