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
func (r *runner) holdQEMU(ctx context.Context) error {
	if r.ps.policy == nil || !r.ps.hold {
		return nil
	}
	p, err := r.o.Src.QueryMigrateParameters(ctx)
	if err != nil {
		return fmt.Errorf("source: query-migrate-parameters: %w", err)
	}
	r.ps.saved = p.DowntimeLimit
	hold := uint64(holdDowntimeMS)
	if err := r.o.Src.MigrateSetParameters(ctx, qmp.MigrationParameters{DowntimeLimit: &hold}); err != nil {
		return fmt.Errorf("source: hold pre-copy (downtime-limit %d ms): %w", hold, err)
	}
	return nil
}

func (r *runner) restoreQEMU(ctx context.Context) {
	if r.ps.saved == nil {
		return
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	if err := r.o.Src.MigrateSetParameters(cctx, qmp.MigrationParameters{DowntimeLimit: r.ps.saved}); err != nil {
		r.o.Log.Warn("source: restore downtime-limit", zap.Uint64("ms", *r.ps.saved), zap.Error(err))
	}
}

// reading turns QEMU's counters into the policy's view, with the rate
// measured since the previous reading.
func (r *runner) reading(ram *qmp.RAMStats) stopcopy.Reading {
	now := time.Since(r.ps.migrateStart)
	rd := stopcopy.Reading{Elapsed: now}
	if ram == nil {
		return rd
	}
	rd.RemainingBytes, rd.TransferredBytes = ram.Remaining, ram.Transferred
	if dt := (now - r.ps.lastAt).Seconds(); dt > 0 && r.ps.lastAt > 0 {
		rd.WireRate = float64(ram.Transferred-r.ps.lastSent) / dt
	}
	return rd
}

// afterPass records a pass for the policy and, when decide is set, acts on
// its decision.
func (r *runner) afterPass(ctx context.Context, pass int, ram *qmp.RAMStats, decide bool) error {
	if r.ps.policy == nil {
		return nil
	}
	if ram != nil && r.ps.hist.RAMBytes == 0 {
		r.ps.hist.RAMBytes, r.ps.hist.PageSize = ram.Total, ram.PageSize
	}
	rd := r.reading(ram)
	r.ps.hist.Passes = append(r.ps.hist.Passes, stopcopy.Pass{Pass: pass, Reading: rd})
	r.ps.hist.Now = stopcopy.Reading{}
	r.ps.lastAt = rd.Elapsed
	if ram != nil {
		r.ps.lastSent = ram.Transferred
	}
	if !decide {
		return nil
	}
	return r.decide(ctx, pass)
}

// between lets time and byte budgets fire during a long pass.
func (r *runner) between(ctx context.Context, ram *qmp.RAMStats) error {
	if r.ps.policy == nil || len(r.ps.hist.Passes) == 0 {
		return nil
	}
	rd := r.reading(ram)
	rd.WireRate = 0 // a partial interval says little; the policy falls back to the pass rate
	r.ps.hist.Now = rd
	return r.decide(ctx, r.pass)
}

func (r *runner) decide(ctx context.Context, pass int) error {
	if r.ps.decided || r.phase == PhaseSwitchover || r.phase == PhaseCompleted {
		return nil
	}
	d := r.ps.policy.Decide(r.ps.hist)
	switch d.Action {
	case stopcopy.StopAndCopy:
		r.ps.decided = true
		r.res.Decision = &Decision{Pass: pass, Action: d.Action.String(), Rule: d.Rule, Reason: d.Reason, DecidedAtMS: time.Since(r.start).Milliseconds()}
		force := uint64(forceDowntimeMS)
		if err := r.o.Src.MigrateSetParameters(ctx, qmp.MigrationParameters{DowntimeLimit: &force}); err != nil {
			return fmt.Errorf("source: force stop-and-copy (downtime-limit %d ms): %w", force, err)
		}
		r.o.Log.Info("stop-and-copy", zap.Int("pass", pass), zap.String("rule", d.Rule), zap.String("reason", d.Reason))
	case stopcopy.Abort:
		r.ps.decided = true
		r.res.Decision = &Decision{Pass: pass, Action: d.Action.String(), Rule: d.Rule, Reason: d.Reason, DecidedAtMS: time.Since(r.start).Milliseconds()}
		return fmt.Errorf("%w: %s (%s)", ErrBudget, d.Reason, d.Rule)
	}
	return nil
}
