package migrate

import (
	"errors"
	"fmt"
	"time"

	"github.com/vmigrate/vmigrate/blockmirror"
	"github.com/vmigrate/vmigrate/pagecodec"
	"github.com/vmigrate/vmigrate/probe"
)

// Result statuses, as the JSON result spells them.
const (
	StatusCompleted = "completed"
	StatusFailed    = "failed"
	StatusCancelled = "cancelled"
)

// Result is what one migration did. It is the JSON object `vmigrate run
// --json` prints; later features add fields, none is renamed.
type Result struct {
	Status string `json:"status"`
	Error  string `json:"error,omitempty"`
	// Stage says where a failure happened: preflight (nothing was
	// changed), precopy, switchover or after (the destination's start).
	Stage string `json:"stage,omitempty"`

	TotalMS    int64 `json:"total_ms"`      // vmigrate's wall clock, preflight to the destination running
	QEMUTotal  int64 `json:"qemu_total_ms"` // QEMU's total-time
	SetupMS    int64 `json:"setup_ms"`
	DowntimeMS int64 `json:"downtime_ms"` // as QEMU reports it
	// ObservedDowntimeMS is the longest gap between the guest's answers
	// to the prober (Options.Probe), as a client sees it.
	ObservedDowntimeMS int64         `json:"observed_downtime_ms,omitempty"`
	Probe              *probe.Result `json:"probe,omitempty"`

	StreamBytes       int64  `json:"stream_bytes"`        // bytes QEMU sent
	StreamBytesSource string `json:"stream_bytes_source"` // the Transport that counted it ("relay", "wan"), or "qemu" (ram.transferred)
	// WireBytes crossed the emulated WAN link, both directions (tunnel
	// framing, TLS and the return path included); 0 without a link.
	WireBytes int64 `json:"wire_bytes"`
	// Codec is what the page codec did, when the path had one.
	Codec          *pagecodec.Stats `json:"codec,omitempty"`
	RAMBytes       int64            `json:"ram_total_bytes"`
	RAMTransferred int64            `json:"ram_transferred_bytes"`
	// Disks are the mirrors of the VM's disks (Options.Disks).
	Disks []blockmirror.DiskStats `json:"disks,omitempty"`

	Passes []Pass `json:"passes"`
	// Policy is the stop rule (smart, xen, qemu, or budget(...)); Decision
	// says when and why it ended pre-copy (absent when QEMU decided).
	Policy   string    `json:"policy"`
	Decision *Decision `json:"decision,omitempty"`

	SourceStatus string `json:"source_status"` // QEMU run state at the end
	DestStatus   string `json:"dest_status,omitempty"`
	SourceQEMU   string `json:"source_qemu"`
	DestQEMU     string `json:"dest_qemu"`
	SwitchoverMS int64  `json:"switchover_at_ms,omitempty"` // when the source stopped, from the start
}

// Pass is one dirty-bitmap sync of QEMU's pre-copy (MIGRATION_PASS), with
// the counters read right after it.
type Pass struct {
	Pass             int   `json:"pass"`
	TMS              int64 `json:"t_ms"`
	RemainingBytes   int64 `json:"remaining_bytes"`
	TransferredBytes int64 `json:"transferred_bytes"`
	DirtyPagesRate   int64 `json:"dirty_pages_rate"`
}

// Phase is where a migration stands, for progress displays.
type Phase string

// Phases in order.
const (
	PhasePreflight  Phase = "preflight"
	PhaseSetup      Phase = "setup"
	PhaseMirror     Phase = "mirror" // disks copied until in sync, before the RAM moves
	PhasePrecopy    Phase = "precopy"
	PhaseSwitchover Phase = "switchover"
	PhaseCompleted  Phase = "completed"
	PhaseFailed     Phase = "failed"
	PhaseCancelled  Phase = "cancelled"
)

// Progress is one step of the typed progress stream.
type Progress struct {
	Phase            Phase
	Pass             int
	RemainingBytes   int64
	TransferredBytes int64
	TotalBytes       int64
	Mbps             float64
	Elapsed          time.Duration
}

// Stages of Error.
const (
	StagePreflight  = "preflight"
	StagePrecopy    = "precopy"
	StageSwitchover = "switchover"
	StageAfter      = "after"
)

// Error is a migration that did not complete. SourceRunning reports
// whether the source VM was confirmed running afterwards.
type Error struct {
	Stage         string
	SourceRunning bool
	VMOnDest      bool // the destination runs the VM (and the source does not)
	Cancelled     bool
	Err           error
}

func (e *Error) Error() string {
	state := "source VM is running"
	switch {
	case e.VMOnDest:
		state = "the VM runs on the destination"
	case !e.SourceRunning:
		state = "SOURCE VM IS NOT CONFIRMED RUNNING: check it"
	}
	if e.Stage == StagePreflight {
		return fmt.Sprintf("%v (nothing was changed)", e.Err)
	}
	return fmt.Sprintf("migration %s: %v; %s", e.Stage, e.Err, state)
}

func (e *Error) Unwrap() error { return e.Err }

// Sentinel causes, for errors.Is.
var (
	ErrSourceNotRunning = errors.New("source VM is not running")
	ErrDestNotIncoming  = errors.New("destination is not waiting for an incoming migration")
	ErrSwapped          = errors.New("source and destination look swapped")
	ErrBusy             = errors.New("a migration is already under way on the source")
	ErrDestLost         = errors.New("destination did not start the VM")
	ErrUnsafeTCG        = errors.New("refusing a migration that would corrupt guest memory")
	ErrStreamFormat     = errors.New("the page codec cannot read this stream")
)
