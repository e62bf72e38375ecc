package migrate

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/vmigrate/vmigrate/probe"
	"github.com/vmigrate/vmigrate/qmp"
	"github.com/vmigrate/vmigrate/stopcopy"
)

// Controller is what the shared driver needs of whatever runs the
// migration: QEMU directly over QMP (Run), or libvirt (RunLibvirt). A stop
// policy steers pre-copy through the downtime limit alone: a tiny one
// holds the source in pre-copy, the largest one makes it stop and copy,
// and the user's own is put back at the end.
type Controller interface {
	// DowntimeLimit is the source's current downtime limit in ms.
	DowntimeLimit(ctx context.Context) (uint64, error)
	// SetDowntimeLimit sets it.
	SetDowntimeLimit(ctx context.Context, ms uint64) error
}

// driver is the part of a migration both paths share: the clock, the
// result, the progress stream, the stop policy and the transport. Run's
// runner and RunLibvirt's virtRunner embed it.
type driver struct {
	ctl       Controller
	start     time.Time
	res       Result
	pass      int
	phase     Phase
	ps        policyState
	transport Transport // the open Transport, if one carries the stream
	progress  func(Progress)
	log       *zap.Logger
}

func newDriver(ctl Controller, progress func(Progress), log *zap.Logger) driver {
	if log == nil {
		log = zap.NewNop()
	}
	if progress == nil {
		progress = func(Progress) {}
	}
	return driver{ctl: ctl, start: time.Now(), progress: progress, log: log,
		res: Result{Status: StatusFailed, StreamBytesSource: "qemu", Passes: []Pass{}, Policy: "qemu"}}
}

// setPolicy installs the stop policy; nil leaves the stop to QEMU.
func (d *driver) setPolicy(p stopcopy.Policy) {
	if p == nil {
		return
	}
	d.ps = policyState{policy: p, hold: !qemuDecides(p)}
	d.res.Policy = p.Name()
}

func (d *driver) emit(p Progress) {
	p.Phase = d.phase
	p.Pass = d.pass
	p.Elapsed = time.Since(d.start)
	d.progress(p)
}

// addPass adds one pass to the result and hands it to the policy,
// which decides only when decide is set (pre-copy under way).
func (d *driver) addPass(ctx context.Context, pass int, ram *qmp.RAMStats, decide bool) error {
	p := Pass{Pass: pass, TMS: time.Since(d.start).Milliseconds()}
	if ram != nil {
		p.RemainingBytes, p.TransferredBytes, p.DirtyPagesRate = ram.Remaining, ram.Transferred, ram.DirtyPagesRate
	}
	d.res.Passes = append(d.res.Passes, p)
	return d.afterPass(ctx, pass, ram, decide)
}

// finish fills in what the result takes from the clock and the transport,
// and closes the transport. err is the migration's outcome.
func (d *driver) finish(err error) (Result, error) {
	d.res.TotalMS = time.Since(d.start).Milliseconds()
	if dec := d.res.Decision; dec != nil && d.res.SwitchoverMS > 0 {
		dec.SourceStoppedAtMS = d.res.SwitchoverMS
	}
	if t := d.transport; t != nil {
		// Close first: it waits for the transport's goroutines, so the
		// counts and the codec's CPU include the stream's last bytes (QEMU
		// may report completed before the encoder has seen the end).
		t.Close()
		if c, ok := t.(codecReporter); ok {
			d.res.Codec = c.CodecStats()
		}
		d.res.StreamBytes, d.res.WireBytes = t.Counts()
		d.res.StreamBytesSource = t.Name()
	} else {
		d.res.StreamBytes = d.res.RAMTransferred
	}
	if err != nil {
		var me *Error
		if errors.As(err, &me) {
			d.res.Stage = me.Stage
			if me.Cancelled {
				d.res.Status = StatusCancelled
			}
		}
		d.res.Error = err.Error()
		return d.res, err
	}
	d.res.Status = StatusCompleted
	d.phase = PhaseCompleted
	d.emit(Progress{TransferredBytes: d.res.RAMTransferred, TotalBytes: d.res.RAMBytes})
	return d.res, nil
}

// startProbe starts the prober of the guest-observed downtime, if cfg
// asks for one; stopProbe (deferred) stops it if probeAnswered did not.
func (d *driver) startProbe(ctx context.Context, cfg *probe.Config) *probe.Prober {
	if cfg == nil {
		return nil
	}
	return probe.Start(ctx, *cfg)
}

func (d *driver) stopProbe(p *probe.Prober) {
	if p != nil && d.res.Probe == nil {
		pr := p.Stop()
		d.res.Probe = &pr
	}
}

// probeAnswered waits, after the switchover, for the guest to answer from
// the destination: the gap ends with that answer. It stops the prober and
// records what it saw.
func (d *driver) probeAnswered(ctx context.Context, p *probe.Prober, timeout time.Duration) error {
	if p == nil {
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, timeout)
	answered := p.WaitAnswer(wctx, time.Now())
	cancel()
	pr := p.Stop()
	d.res.Probe = &pr
	d.res.ObservedDowntimeMS = pr.MaxGapMS
	if !answered {
		return fmt.Errorf("%w: the guest does not answer the prober after the switchover", ErrDestLost)
	}
	return nil
}

// qmpControl steers a source QEMU over QMP.
type qmpControl struct{ c *qmp.Client }

func (q qmpControl) DowntimeLimit(ctx context.Context) (uint64, error) {
	p, err := q.c.QueryMigrateParameters(ctx)
	if err != nil {
		return 0, fmt.Errorf("query-migrate-parameters: %w", err)
	}
	if p.DowntimeLimit == nil {
		return 0, fmt.Errorf("query-migrate-parameters: QEMU reports no downtime-limit")
	}
	return *p.DowntimeLimit, nil
}

func (q qmpControl) SetDowntimeLimit(ctx context.Context, ms uint64) error {
	return q.c.MigrateSetParameters(ctx, qmp.MigrationParameters{DowntimeLimit: &ms})
}
