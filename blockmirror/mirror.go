// Package blockmirror moves a VM's local disks while it runs: QEMU's
// mirror job copies each disk from the source to an NBD export of a
// pre-created image on the destination, then keeps the copy in sync until
// the switchover. Without shared storage a disk must move with the VM, and
// it is usually far larger than its RAM.
//
// The flow, one Mirror per migration:
//
//	Export (destination): nbd-server-start on a unix socket, one writable
//	        block-export-add per disk.
//	Start (source):       blockdev-add of an NBD client node per disk,
//	        pointed at a socket (vmigrate's tunnel end, or the export
//	        itself), then blockdev-mirror (sync full, or top when the
//	        destination already has the backing chain).
//	WaitReady:            every job reports BLOCK_JOB_READY: the target
//	        holds the disk and the mirror copies each new guest write.
//	        (RAM pre-copy runs after this.)
//	Complete:             after the source VM stopped for the switchover,
//	        block-job-cancel without force on every job: a point-in-time
//	        copy; the source keeps its own disk. The NBD client nodes are
//	        removed.
//	StopExport (destination): nbd-server-stop, before the destination
//	        resumes the VM.
//
// Abort ends the jobs at once (forced cancel) and removes the client
// nodes: the source's disks are never touched by any of this.
//
// The target images are made and checked by CreateTarget and
// CheckTargets (target.go). What crosses between the NBD client and the
// export is the tunnel's business: a channel per disk, with the block
// codec of package blockcodec and the destination's neighbour index of
// package blockindex (docs/disks.md).
package blockmirror

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/vmigrate/vmigrate/blockcodec"
	"github.com/vmigrate/vmigrate/qmp"
)

// DefaultGranularity is the mirror's dirty-bitmap granularity.
const DefaultGranularity = 64 << 10

// Sync modes of a mirror.
const (
	SyncFull = "full" // the whole disk, backing chain included
	SyncTop  = "top"  // the top image only: the destination has the backing chain
)

// Options configure a Mirror.
type Options struct {
	// Disks are the source's block node names (e.g. "vda"), which are
	// also the export names on the destination.
	Disks []string
	// Socket is the unix socket the source's NBD clients connect to;
	// Sockets, when it names a disk, gives that disk its own (a tunnel
	// channel per disk).
	Socket  string
	Sockets map[string]string
	// Sync is SyncFull (default) or SyncTop.
	Sync string
	// CopyMode is qmp.CopyModeBackground (default) or
	// qmp.CopyModeWriteBlocking.
	CopyMode string
	// Granularity of the dirty bitmap, default DefaultGranularity.
	Granularity int64
	// ConvergeAfter, when set, switches a background mirror that is not
	// ready after this long to write-blocking (QEMU 8.2+, block-job-change).
	ConvergeAfter time.Duration
	// Progress, when set, is called about once a second while WaitReady
	// waits.
	Progress func([]DiskStats)
	Log      *zap.Logger
}

// DiskStats is one disk's mirror.
type DiskStats struct {
	Disk string `json:"disk"`
	// Bytes is the work QEMU counted: the disk once, plus every block the
	// guest dirtied during the mirror.
	Bytes int64 `json:"bytes"`
	Done  int64 `json:"done_bytes"`
	// ReadyMS is the time from Start to BLOCK_JOB_READY (0 before).
	ReadyMS int64 `json:"ready_ms"`
	// SentBytes went into the tunnel's channel of the disk (0 when the
	// mirror connected to the destination directly).
	SentBytes int64 `json:"sent_bytes,omitempty"`
	// Codec counts the blocks the tunnel's block codec sent for the disk,
	// by kind (zero, reference, LZ4, DEFLATE, raw); nil without it.
	Codec *blockcodec.Stats `json:"codec,omitempty"`
	// Target is the destination's image, as its QEMU names it.
	Target   string `json:"target,omitempty"`
	CopyMode string `json:"copy_mode"`
	Status   string `json:"status"`
}

// Errors of a mirror, for errors.Is.
var (
	ErrJobFailed = errors.New("mirror job failed")
	ErrNoDisks   = errors.New("no disks to mirror")
)

type disk struct {
	node, job, target string
	ready             time.Duration
	done              bool // completed or cancelled
	copyMode          string
	last              qmp.BlockJobInfo
}

// Mirror is the running mirror of a VM's disks.
type Mirror struct {
	src   *qmp.Client
	o     Options
	start time.Time
	cur   qmp.Cursor
	disks []*disk
}

// Export starts the destination's NBD server on socket and exports each
// node writable under its own name. On failure the server is stopped.
func Export(ctx context.Context, dst *qmp.Client, socket string, nodes []string) error {
	if len(nodes) == 0 {
		return ErrNoDisks
	}
	if err := dst.NBDServerStart(ctx, socket); err != nil {
		return fmt.Errorf("destination: nbd-server-start %s: %w", socket, err)
	}
	for _, n := range nodes {
		if err := dst.BlockExportAddNBD(ctx, "export-"+n, n, n, true); err != nil {
			StopExport(context.WithoutCancel(ctx), dst)
			return fmt.Errorf("destination: export %s: %w", n, err)
		}
	}
	return nil
}

// StopExport stops the destination's NBD server, and its exports with it.
func StopExport(ctx context.Context, dst *qmp.Client) error {
	if err := dst.NBDServerStop(ctx); err != nil {
		return fmt.Errorf("destination: nbd-server-stop: %w", err)
	}
	return nil
}

// Start adds an NBD client node per disk and starts its mirror. On
// failure what it started is undone.
func Start(ctx context.Context, src *qmp.Client, o Options) (*Mirror, error) {
	if len(o.Disks) == 0 {
		return nil, ErrNoDisks
	}
	for _, n := range o.Disks {
		if o.Socket == "" && o.Sockets[n] == "" {
			return nil, fmt.Errorf("mirror %s: no socket for its NBD client", n)
		}
	}
	if o.Sync == "" {
		o.Sync = SyncFull
	}
	if o.Sync != SyncFull && o.Sync != SyncTop {
		return nil, fmt.Errorf("mirror: sync %q: want %s or %s", o.Sync, SyncFull, SyncTop)
	}
	if o.CopyMode == "" {
		o.CopyMode = qmp.CopyModeBackground
	}
	if o.CopyMode != qmp.CopyModeBackground && o.CopyMode != qmp.CopyModeWriteBlocking {
		return nil, fmt.Errorf("mirror: copy mode %q: want %s or %s", o.CopyMode, qmp.CopyModeBackground, qmp.CopyModeWriteBlocking)
	}
	if o.Granularity == 0 {
		o.Granularity = DefaultGranularity
	}
	if o.Granularity < 512 || o.Granularity > 64<<20 || o.Granularity&(o.Granularity-1) != 0 {
		return nil, fmt.Errorf("mirror: granularity %d: want a power of 2 from 512 B to 64 MiB", o.Granularity)
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	m := &Mirror{src: src, o: o, start: time.Now(), cur: src.Cursor()}
	for _, n := range o.Disks {
		d := &disk{node: n, job: "mirror-" + n, target: n + "-mirror-target", copyMode: o.CopyMode}
		sock := o.Socket
		if s := o.Sockets[n]; s != "" {
			sock = s
		}
		if err := src.BlockdevAddNBD(ctx, d.target, sock, n); err != nil {
			m.Abort(context.WithoutCancel(ctx))
			return nil, fmt.Errorf("mirror %s: NBD client of %s: %w", n, sock, err)
		}
		m.disks = append(m.disks, d)
		err := src.BlockdevMirror(ctx, qmp.MirrorArgs{JobID: d.job, Device: n, Target: d.target, Sync: o.Sync, CopyMode: o.CopyMode, Granularity: o.Granularity})
		if err != nil {
			d.done = true // no job to end, only the node to remove
			m.Abort(context.WithoutCancel(ctx))
			return nil, fmt.Errorf("mirror %s: blockdev-mirror: %w", n, err)
		}
	}
	return m, nil
}

// Stats reads every job's progress.
func (m *Mirror) Stats(ctx context.Context) []DiskStats {
	jobs, _ := m.src.QueryBlockJobs(ctx)
	out := make([]DiskStats, 0, len(m.disks))
	for _, d := range m.disks {
		for _, j := range jobs {
			if j.Device == d.job {
				d.last = j
			}
		}
		out = append(out, DiskStats{Disk: d.node, Bytes: d.last.Len, Done: d.last.Offset, ReadyMS: d.ready.Milliseconds(), CopyMode: d.copyMode, Status: d.last.Status})
	}
	return out
}

// WaitReady waits until every disk's mirror is ready. A job that ends or
// fails first is an error (ErrJobFailed); the caller then Aborts.
func (m *Mirror) WaitReady(ctx context.Context) error {
	var convergeC <-chan time.Time
	if m.o.ConvergeAfter > 0 && m.o.CopyMode == qmp.CopyModeBackground {
		t := time.NewTimer(m.o.ConvergeAfter)
		defer t.Stop()
		convergeC = t.C
	}
	for !m.allReady() {
		ectx, cancel := context.WithTimeout(ctx, time.Second)
		ev, err := m.src.NextEvent(ectx, &m.cur)
		cancel()
		select {
		case <-convergeC:
			convergeC = nil
			if err := m.writeBlocking(ctx); err != nil {
				return err
			}
		default:
		}
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("mirror: waiting for the disks to be in sync: %w", ctx.Err())
			}
			if errors.Is(err, context.DeadlineExceeded) {
				if err := m.checkJobs(ctx); err != nil {
					return err
				}
				if m.o.Progress != nil {
					m.o.Progress(m.Stats(ctx))
				}
				continue
			}
			return fmt.Errorf("mirror: source events: %w", err)
		}
		if err := m.onEvent(ev); err != nil {
			return err
		}
	}
	return nil
}

func (m *Mirror) allReady() bool {
	for _, d := range m.disks {
		if d.ready == 0 {
			return false
		}
	}
	return true
}

func (m *Mirror) find(job string) *disk {
	for _, d := range m.disks {
		if d.job == job {
			return d
		}
	}
	return nil
}

// onEvent takes one block-job event of the source.
func (m *Mirror) onEvent(ev qmp.Event) error {
	switch ev.Name {
	case qmp.EventBlockJobReady, qmp.EventBlockJobCompleted, qmp.EventBlockJobCancelled:
	default:
		return nil
	}
	b, err := ev.BlockJob()
	if err != nil {
		return nil
	}
	d := m.find(b.Device)
	if d == nil {
		return nil
	}
	switch ev.Name {
	case qmp.EventBlockJobReady:
		if d.ready == 0 {
			d.ready = max(time.Since(m.start), time.Millisecond)
			m.o.Log.Info("disk in sync", zap.String("disk", d.node), zap.Int64("bytes", b.Len), zap.Duration("after", d.ready))
		}
	case qmp.EventBlockJobCompleted:
		d.done = true
		if b.Error != "" {
			return fmt.Errorf("mirror %s: %w: %s", d.node, ErrJobFailed, b.Error)
		}
		if d.ready == 0 {
			return fmt.Errorf("mirror %s: %w: it ended before it was in sync", d.node, ErrJobFailed)
		}
	case qmp.EventBlockJobCancelled:
		d.done = true
		return fmt.Errorf("mirror %s: %w: cancelled by someone else", d.node, ErrJobFailed)
	}
	return nil
}

// checkJobs notices a job that vanished without an event we saw.
func (m *Mirror) checkJobs(ctx context.Context) error {
	jobs, err := m.src.QueryBlockJobs(ctx)
	if err != nil {
		return fmt.Errorf("mirror: query-block-jobs: %w", err)
	}
	for _, d := range m.disks {
		found := false
		for _, j := range jobs {
			if j.Device == d.job {
				found = true
				d.last = j
				if j.Status == "concluded" && j.Error != "" {
					return fmt.Errorf("mirror %s: %w: %s", d.node, ErrJobFailed, j.Error)
				}
			}
		}
		if !found && !d.done {
			d.done = true
			return fmt.Errorf("mirror %s: %w: the job is gone", d.node, ErrJobFailed)
		}
	}
	return nil
}

// writeBlocking switches the mirrors that are not ready to write-blocking
// copy mode: a guest write then completes only once it reached the
// target, so the mirror converges whatever the guest's write rate.
func (m *Mirror) writeBlocking(ctx context.Context) error {
	for _, d := range m.disks {
		if d.ready != 0 || d.copyMode == qmp.CopyModeWriteBlocking {
			continue
		}
		err := m.src.Execute(ctx, "block-job-change", map[string]any{"id": d.job, "type": "mirror", "copy-mode": qmp.CopyModeWriteBlocking}, nil)
		if err != nil {
			return fmt.Errorf("mirror %s: switch to write-blocking: %w", d.node, err)
		}
		d.copyMode = qmp.CopyModeWriteBlocking
		m.o.Log.Warn("disk mirror does not converge: switched to write-blocking", zap.String("disk", d.node))
	}
	return nil
}

// Complete ends every ready mirror with a point-in-time copy, to be
// called once the source VM has stopped, and removes the NBD client
// nodes. The source keeps its disks.
func (m *Mirror) Complete(ctx context.Context) error {
	for _, d := range m.disks {
		if d.ready == 0 || d.done {
			return fmt.Errorf("mirror %s: %w: not in sync at the switchover", d.node, ErrJobFailed)
		}
		if err := m.src.BlockJobCancel(ctx, d.job, false); err != nil {
			return fmt.Errorf("mirror %s: block-job-cancel: %w", d.node, err)
		}
	}
	if err := m.waitEnded(ctx, false); err != nil {
		return err
	}
	return m.removeTargets(ctx)
}

// Abort stops every job at once and removes the NBD client nodes. It is
// safe after a failed Start or WaitReady, and more than once.
func (m *Mirror) Abort(ctx context.Context) error {
	var errs []error
	for _, d := range m.disks {
		if d.done {
			continue
		}
		if err := m.src.BlockJobCancel(ctx, d.job, true); err != nil {
			var qe *qmp.Error
			if !errors.As(err, &qe) { // a job that is gone already is no failure
				errs = append(errs, fmt.Errorf("mirror %s: block-job-cancel: %w", d.node, err))
			}
		}
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	if err := m.waitEnded(wctx, true); err != nil {
		errs = append(errs, err)
	}
	cancel()
	if err := m.removeTargets(ctx); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// waitEnded waits until no job of the mirror is left.
func (m *Mirror) waitEnded(ctx context.Context, aborting bool) error {
	for {
		jobs, err := m.src.QueryBlockJobs(ctx)
		if err != nil {
			return fmt.Errorf("mirror: query-block-jobs: %w", err)
		}
		left := 0
		for _, d := range m.disks {
			for _, j := range jobs {
				if j.Device == d.job {
					left++
					d.last = j
				}
			}
		}
		if left == 0 {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("mirror: %d jobs still running: %w", left, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	// A completion that failed shows in the events.
	for {
		ectx, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
		ev, err := m.src.NextEvent(ectx, &m.cur)
		cancel()
		if err != nil {
			break
		}
		if ev.Name == qmp.EventBlockJobCompleted && !aborting {
			if b, err := ev.BlockJob(); err == nil && m.find(b.Device) != nil && b.Error != "" {
				return fmt.Errorf("mirror %s: %w: %s", b.Device, ErrJobFailed, b.Error)
			}
		}
	}
	for _, d := range m.disks {
		d.done = true
	}
	return nil
}

func (m *Mirror) removeTargets(ctx context.Context) error {
	var errs []error
	for _, d := range m.disks {
		if d.target == "" {
			continue
		}
		if err := m.src.BlockdevDel(ctx, d.target); err != nil {
			errs = append(errs, fmt.Errorf("mirror %s: remove the NBD client: %w", d.node, err))
			continue
		}
		d.target = ""
	}
	return errors.Join(errs...)
}
