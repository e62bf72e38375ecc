package migrate

// Disks on the QMP path: before the RAM moves, every disk is mirrored to
// the destination's NBD export (blockmirror) until it is in sync; at the
// switchover the source waits in pre-switchover (the capability
// pause-before-switchover), the mirrors complete with a point-in-time copy,
// the destination's NBD server stops, and only then does the source send
// the device state. A failure aborts the mirrors and stops the export; the
// source never stops using its own disks.

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"go.uber.org/zap"

	"github.com/vmigrate/vmigrate/blockcodec"
	"github.com/vmigrate/vmigrate/blockmirror"
	"github.com/vmigrate/vmigrate/qmp"
)

// diskCarrier is a Transport that can carry a disk's NBD traffic on a
// channel of its own (wanpath.Path).
type diskCarrier interface {
	CarryDisk(name, listen, forward string) (string, error)
	ChannelBytes(name string) int64
}

// diskCodecCounter is a Transport whose disk channels may pass through the
// block codec (wanpath.Path).
type diskCodecCounter interface {
	DiskCodecStats(name string) *blockcodec.Stats
}

// diskChannel names the tunnel channel of a disk.
func diskChannel(node string) string { return "disk:" + node }

// diskRun is the state of the disks during one Run.
type diskRun struct {
	sockets   map[string]string // node -> where its NBD client connects
	exported  bool
	mirror    *blockmirror.Mirror
	completed bool
	pauseCap  bool // pause-before-switchover was turned on by us
	// targets are the destination's images, once checked; from the first
	// byte mirrored they hold a partial copy until the migration completes.
	targets []blockmirror.Image
}

// carryDisks gives every disk a channel of t, when t can carry them;
// else the mirrors connect to the destination's socket directly.
func (r *runner) carryDisks(t Transport) error {
	if len(r.o.Disks) == 0 {
		return nil
	}
	r.disks.sockets = map[string]string{}
	c, ok := t.(diskCarrier)
	for _, n := range r.o.Disks {
		if !ok {
			r.disks.sockets[n] = r.o.NBDSocket
			continue
		}
		sock, err := c.CarryDisk(diskChannel(n), "", "unix:"+r.o.NBDSocket)
		if err != nil {
			return fmt.Errorf("disk %s: %w", n, err)
		}
		r.disks.sockets[n] = sock
	}
	return nil
}

// mirrorDisks exports the destination's disks, mirrors the source's into
// them and waits until all are in sync.
func (r *runner) mirrorDisks(ctx context.Context) error {
	if len(r.o.Disks) == 0 {
		return nil
	}
	if r.disks.sockets == nil {
		if err := r.carryDisks(nil); err != nil {
			return err
		}
	}
	r.phase = PhaseMirror
	r.emit(Progress{})
	targets, err := blockmirror.CheckTargets(ctx, r.o.Src, r.o.Dst, r.o.Disks)
	if err != nil {
		return err
	}
	if err := blockmirror.Export(ctx, r.o.Dst, r.o.NBDSocket, r.o.Disks); err != nil {
		return err
	}
	r.disks.exported = true
	r.disks.targets = targets
	m, err := blockmirror.Start(ctx, r.o.Src, blockmirror.Options{
		Disks: r.o.Disks, Sockets: r.disks.sockets, CopyMode: r.o.DiskCopyMode, ConvergeAfter: r.o.DiskConvergeAfter, Log: r.log,
		Progress: func(st []blockmirror.DiskStats) {
			var p Progress
			for _, d := range st {
				p.TransferredBytes += d.Done
				p.TotalBytes += d.Bytes
				r.log.Debug("mirror", zap.String("disk", d.Disk), zap.Int64("done", d.Done), zap.Int64("len", d.Bytes), zap.String("status", d.Status))
			}
			p.RemainingBytes = p.TotalBytes - p.TransferredBytes
			r.emit(p)
		},
	})
	if err != nil {
		return err
	}
	r.disks.mirror = m
	if err := m.WaitReady(ctx); err != nil {
		return err
	}
	r.diskStats(ctx)
	if err := r.o.Src.MigrateSetCapabilities(ctx, qmp.Capability{Name: qmp.CapabilityPauseBeforeSwitchover, State: true}); err != nil {
		return fmt.Errorf("source: migrate-set-capabilities pause-before-switchover: %w", err)
	}
	r.disks.pauseCap = true
	r.phase = PhasePrecopy
	return nil
}

// diskStats copies the mirrors' figures into the result.
func (r *runner) diskStats(ctx context.Context) {
	if r.disks.mirror == nil {
		return
	}
	st := r.disks.mirror.Stats(ctx)
	c, carried := r.transport.(diskCarrier)
	for i := range st {
		if carried {
			st[i].SentBytes = c.ChannelBytes(diskChannel(st[i].Disk))
		}
		if cs, ok := r.transport.(diskCodecCounter); ok {
			st[i].Codec = cs.DiskCodecStats(diskChannel(st[i].Disk))
		}
		for _, t := range r.disks.targets {
			if t.Node == st[i].Disk {
				st[i].Target = t.File
			}
		}
	}
	r.res.Disks = st // a mirror keeps the last counters of a job that ended
}

// switchDisks runs while the source waits in pre-switchover, the VM
// stopped: the mirrors complete (the destination's images now hold the
// disks as the VM left them), the export stops, and the source goes on
// to send the device state.
func (r *runner) switchDisks(ctx context.Context) error {
	if r.disks.mirror == nil || r.disks.completed {
		return nil
	}
	r.disks.completed = true
	if err := r.disks.mirror.Complete(ctx); err != nil {
		return err
	}
	r.diskStats(ctx)
	if err := blockmirror.StopExport(ctx, r.o.Dst); err != nil {
		return err
	}
	r.disks.exported = false
	if err := r.o.Src.MigrateContinue(ctx, "pre-switchover"); err != nil {
		return fmt.Errorf("source: migrate-continue: %w", err)
	}
	return nil
}

// abortDisks ends the mirrors and the export after a failure, and puts
// pause-before-switchover back. Best effort: what fails is logged.
func (r *runner) abortDisks(ctx context.Context) {
	if m := r.disks.mirror; m != nil && !r.disks.completed {
		r.diskStats(ctx) // how far the mirrors got
		if err := m.Abort(ctx); err != nil {
			r.log.Warn("disks: abort the mirrors", zap.Error(err))
		}
		r.disks.completed = true
	}
	if r.disks.exported {
		if err := blockmirror.StopExport(ctx, r.o.Dst); err != nil && !errors.Is(err, qmp.ErrClosed) {
			r.log.Warn("disks: stop the destination's export", zap.Error(err))
		}
		r.disks.exported = false
	}
	r.restorePauseCap(ctx)
}

// partialTargets names the destination's images a failed migration left
// with a partial copy ("" when none was written).
func (r *runner) partialTargets() string {
	if len(r.disks.targets) == 0 {
		return ""
	}
	var files []string
	for _, t := range r.disks.targets {
		files = append(files, fmt.Sprintf("%s (%s)", t.File, t.Node))
	}
	return strings.Join(files, ", ")
}

func (r *runner) restorePauseCap(ctx context.Context) {
	if !r.disks.pauseCap {
		return
	}
	r.disks.pauseCap = false
	if err := r.o.Src.MigrateSetCapabilities(ctx, qmp.Capability{Name: qmp.CapabilityPauseBeforeSwitchover, State: false}); err != nil {
		r.log.Debug("source: turn pause-before-switchover off", zap.Error(err))
	}
}
