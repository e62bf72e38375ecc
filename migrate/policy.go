package migrate

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/vmigrate/vmigrate/qmp"
	"github.com/vmigrate/vmigrate/stopcopy"
)

// The downtime limits through which a stop policy steers QEMU
// (QEMU's migration_iteration_run; docs/design.md, "Stop policies"): a tiny one holds QEMU in pre-copy
// (0 would not: QEMU 7.2 then never re-syncs and copies everything in one
// stop), the largest QEMU accepts makes it stop and copy at its next check.
const (
	holdDowntimeMS  = 1
	forceDowntimeMS = 2_000_000
)

// ErrBudget is wrapped when a budget guard aborted the migration.
var ErrBudget = errors.New("migration budget exhausted")

// Decision is when and why a stop policy ended pre-copy.
type Decision struct {
	Pass              int    `json:"pass"`
	Action            string `json:"action"` // stop-and-copy or abort
	Rule              string `json:"rule"`
	Reason            string `json:"reason"`
	DecidedAtMS       int64  `json:"decided_at_ms"`
	SourceStoppedAtMS int64  `json:"source_stopped_at_ms,omitempty"`
}

// policyState is the driver's part of a runner.
type policyState struct {
	policy   stopcopy.Policy
	hold     bool // a vmigrate rule decides, so QEMU is held in pre-copy
	saved    *uint64
	hist     stopcopy.History
	decided  bool
	lastAt   time.Duration
	lastSent int64
	// migrateStart is when the source was told to migrate: budgets count
	// from there, not from preflight and path setup.
	migrateStart time.Time
}

// qemuDecides reports whether QEMU's own rule ends pre-copy under p.
func qemuDecides(p stopcopy.Policy) bool {
	for {
		switch q := p.(type) {
		case stopcopy.QEMU:
			return true
		case stopcopy.Budget:
			p = q.Inner
		case *stopcopy.Budget:
			p = q.Inner
		default:
			return false
		}
	}
}

// holdQEMU keeps QEMU from finishing by itself while a vmigrate rule
// decides; restore puts the user's downtime limit back.
func (d *driver) holdQEMU(ctx context.Context) error {
	if d.ps.policy == nil || !d.ps.hold {
		return nil
	}
	saved, err := d.ctl.DowntimeLimit(ctx)
	if err != nil {
		return fmt.Errorf("source: read the downtime limit: %w", err)
	}
	d.ps.saved = &saved
	if err := d.ctl.SetDowntimeLimit(ctx, holdDowntimeMS); err != nil {
		return fmt.Errorf("source: hold pre-copy (downtime-limit %d ms): %w", holdDowntimeMS, err)
	}
	return nil
}

func (d *driver) restoreQEMU(ctx context.Context) {
	if d.ps.saved == nil {
		return
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	if err := d.ctl.SetDowntimeLimit(cctx, *d.ps.saved); err != nil {
		d.log.Warn("source: restore downtime-limit", zap.Uint64("ms", *d.ps.saved), zap.Error(err))
	}
}

// reading turns QEMU's counters into the policy's view, with the rate
// measured since the previous reading.
func (d *driver) reading(ram *qmp.RAMStats) stopcopy.Reading {
	now := time.Since(d.ps.migrateStart)
	rd := stopcopy.Reading{Elapsed: now}
	if ram == nil {
		return rd
	}
	rd.RemainingBytes, rd.TransferredBytes = ram.Remaining, ram.Transferred
	if dt := (now - d.ps.lastAt).Seconds(); dt > 0 && d.ps.lastAt > 0 {
		rd.WireRate = float64(ram.Transferred-d.ps.lastSent) / dt
	}
	return rd
}

// afterPass records a pass for the policy and, when decide is set, acts on
// its decision.
func (d *driver) afterPass(ctx context.Context, pass int, ram *qmp.RAMStats, decide bool) error {
	if d.ps.policy == nil {
		return nil
	}
	if ram != nil && d.ps.hist.RAMBytes == 0 {
		d.ps.hist.RAMBytes, d.ps.hist.PageSize = ram.Total, ram.PageSize
	}
	rd := d.reading(ram)
	d.ps.hist.Passes = append(d.ps.hist.Passes, stopcopy.Pass{Pass: pass, Reading: rd})
	d.ps.hist.Now = stopcopy.Reading{}
	d.ps.lastAt = rd.Elapsed
	if ram != nil {
		d.ps.lastSent = ram.Transferred
	}
	if !decide {
		return nil
	}
	return d.decide(ctx, pass)
}

// between lets time and byte budgets fire during a long pass.
func (d *driver) between(ctx context.Context, ram *qmp.RAMStats) error {
	if d.ps.policy == nil || len(d.ps.hist.Passes) == 0 {
		return nil
	}
	rd := d.reading(ram)
	rd.WireRate = 0 // a partial interval says little; the policy falls back to the pass rate
	d.ps.hist.Now = rd
	return d.decide(ctx, d.pass)
}

func (d *driver) decide(ctx context.Context, pass int) error {
	if d.ps.decided || d.phase == PhaseSwitchover || d.phase == PhaseCompleted {
		return nil
	}
	dec := d.ps.policy.Decide(d.ps.hist)
	switch dec.Action {
	case stopcopy.StopAndCopy:
		d.ps.decided = true
		d.res.Decision = &Decision{Pass: pass, Action: dec.Action.String(), Rule: dec.Rule, Reason: dec.Reason, DecidedAtMS: time.Since(d.start).Milliseconds()}
		if err := d.ctl.SetDowntimeLimit(ctx, forceDowntimeMS); err != nil {
			return fmt.Errorf("source: force stop-and-copy (downtime-limit %d ms): %w", forceDowntimeMS, err)
		}
		d.log.Info("stop-and-copy", zap.Int("pass", pass), zap.String("rule", dec.Rule), zap.String("reason", dec.Reason))
	case stopcopy.Abort:
		d.ps.decided = true
		d.res.Decision = &Decision{Pass: pass, Action: dec.Action.String(), Rule: dec.Rule, Reason: dec.Reason, DecidedAtMS: time.Since(d.start).Milliseconds()}
		return fmt.Errorf("%w: %s (%s)", ErrBudget, dec.Reason, dec.Rule)
	}
	return nil
}
