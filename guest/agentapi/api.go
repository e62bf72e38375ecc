package agentapi

import (
	"time"

	"github.com/vmigrate/vmigrate/guest/workload"
)

// HTTP paths served by the agent.
const (
	PathIndex    = "/"
	PathPing     = "/ping"
	PathStatus   = "/status"
	PathWorkload = "/workload"
	PathVerify   = "/verify"
)

// Port is the TCP port the agent listens on.
const Port = 80

// ReadyPrefix starts the console line the agent prints once HTTP is
// listening: "vmigrate-agent: ready ip=10.0.2.15 boot=<boot id>".
const ReadyPrefix = "vmigrate-agent: ready"

// Initramfs layout shared by the image builder and the agent.
const (
	// ModuleDir holds the kernel modules, flat, uncompressed, as NAME.ko.
	ModuleDir = "/lib/modules"
	// ModuleOrderFile lists module names, one a line, in load order.
	ModuleOrderFile = ModuleDir + "/load.order"
	// CorpusFile holds the pages of the memdirty body "files": real files
	// (Debian kernel modules) the image builder concatenates.
	CorpusFile = "/vmigrate/corpus"
	// Busybox is the static busybox, for debugging (rdinit=/bin/sh).
	Busybox = "/bin/busybox"
	// DiskPath is the guest's disk, the lab's virtio-blk device (id vda-dev):
	// the disk workload writes its first disk_wss_bytes.
	DiskPath = "/dev/vda"
)

// Modules are the kernel modules the guest needs for virtio networking and
// block devices, in load order (each after the modules it depends on). The
// image builder adds any further dependency it finds before its first user.
var Modules = []string{
	"virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci",
	"failover", "net_failover", "virtio_net", "virtio_blk",
}

// Status is the answer to GET /status.
type Status struct {
	BootID        string `json:"boot_id"` // random per boot (the kernel's boot_id)
	UptimeMS      int64  `json:"uptime_ms"`
	MemTotalBytes int64  `json:"mem_total_bytes"`
	// MemAvailableBytes is the kernel's estimate of what can still be
	// allocated (MemAvailable); the initramfs and the working set are
	// not in it. 0 when unknown.
	MemAvailableBytes int64 `json:"mem_available_bytes,omitempty"`
	// AgentBytes is what the agent's Go runtime holds from the kernel
	// (heap, stacks, runtime), not counting the working set's mapping.
	AgentBytes int64          `json:"agent_bytes,omitempty"`
	Goroutines int            `json:"goroutines,omitempty"`
	Workload   WorkloadStatus `json:"workload"`
}

// WorkloadStatus is the running workload: its configuration (defaults
// applied) and progress.
type WorkloadStatus struct {
	workload.Config
	Running bool `json:"running"`
	// Populated is true once the initial fill is done: of the memory and,
	// with a disk working set, of the disk.
	Populated           bool      `json:"populated"`
	PopulateMS          int64     `json:"populate_ms"`
	DirtiedTotal        uint64    `json:"dirtied_total"`
	AchievedPagesPerSec float64   `json:"achieved_pages_per_sec"`
	TargetPagesPerSec   float64   `json:"target_pages_per_sec"`
	StartedAt           time.Time `json:"started_at,omitzero"` // guest wall clock
	// Disk is the disk writer's progress; nil without a disk working set.
	Disk *DiskStatus `json:"disk,omitempty"`
	// Error is why the last workload change failed, if it did.
	Error string `json:"error,omitempty"`
}

// DiskStatus is the progress of the disk writer (workload.Disk).
type DiskStatus struct {
	Running              bool    `json:"running"`
	Populated            bool    `json:"populated"` // every block of the working set written once
	PopulateMS           int64   `json:"populate_ms"`
	WrittenTotal         uint64  `json:"written_total"` // blocks rewritten after the fill
	AchievedWritesPerSec float64 `json:"achieved_writes_per_sec"`
	TargetWritesPerSec   float64 `json:"target_writes_per_sec"`
	// Error is the failed write that stopped the writer, if one did.
	Error string `json:"error,omitempty"`
}

// VerifyResult is the answer to GET /verify. The page content is intact when
// PagesWrong is 0, the disk content when BlocksWrong is 0 (BlocksChecked is 0
// without a disk working set).
type VerifyResult struct {
	PagesChecked int64 `json:"pages_checked"`
	PagesWrong   int64 `json:"pages_wrong"`
	FirstWrong   int64 `json:"first_wrong"` // page index, or -1

	BlocksChecked   int64 `json:"blocks_checked"`
	BlocksWrong     int64 `json:"blocks_wrong"`
	BlocksStale     int64 `json:"blocks_stale"`      // of BlocksWrong, those holding an older generation
	FirstWrongBlock int64 `json:"first_wrong_block"` // block index, or -1

	MS int64 `json:"ms"` // time the check took
}
