package qmp

import "context"

// Migration statuses, from QEMU's qapi/migration.json (MigrationStatus). They
// appear in MigrationInfo.Status and MigrationEvent.Status.
const (
	MigrationStatusNone           = "none"
	MigrationStatusSetup          = "setup"
	MigrationStatusActive         = "active"
	MigrationStatusPreSwitchover  = "pre-switchover"
	MigrationStatusDevice         = "device"
	MigrationStatusWaitUnplug     = "wait-unplug"
	MigrationStatusPostcopyActive = "postcopy-active"
	MigrationStatusPostcopyPaused = "postcopy-paused"
	MigrationStatusCompleted      = "completed"
	MigrationStatusFailed         = "failed"
	MigrationStatusCancelling     = "cancelling"
	MigrationStatusCancelled      = "cancelled"
	MigrationStatusColo           = "colo"
)

// MigrationFinished reports whether status is one a migration does not leave
// by itself: completed, failed or cancelled.
func MigrationFinished(status string) bool {
	switch status {
	case MigrationStatusCompleted, MigrationStatusFailed, MigrationStatusCancelled:
		return true
	}
	return false
}

// Migration capability names, from QEMU's qapi/migration.json
// (MigrationCapability).
const (
	CapabilityEvents                = "events"
	CapabilityXBZRLE                = "xbzrle"
	CapabilityAutoConverge          = "auto-converge"
	CapabilityPostcopyRAM           = "postcopy-ram"
	CapabilityReturnPath            = "return-path"
	CapabilityPauseBeforeSwitchover = "pause-before-switchover"
	CapabilityMultifd               = "multifd"
	CapabilityDirtyBitmaps          = "dirty-bitmaps"
	CapabilityLateBlockActivate     = "late-block-activate"
	CapabilityValidateUUID          = "validate-uuid"
	CapabilitySwitchoverAck         = "switchover-ack" // QEMU 8.1+
)

// Capability is one migration capability and whether it is on
// (MigrationCapabilityStatus).
type Capability struct {
	Name  string `json:"capability"`
	State bool   `json:"state"`
}

// MigrationInfo is the reply of query-migrate (MigrationInfo in
// qapi/migration.json), with the fields vmigrate uses; QEMU 7.2 to 10.0 send
// the same names. Optional fields are nil or empty when QEMU omits them:
// before a migration starts the reply is empty.
type MigrationInfo struct {
	Status                string          `json:"status"`
	SetupTime             *int64          `json:"setup-time,omitempty"`        // ms
	TotalTime             *int64          `json:"total-time,omitempty"`        // ms, so far while active
	Downtime              *int64          `json:"downtime,omitempty"`          // ms, once completed
	ExpectedDowntime      *int64          `json:"expected-downtime,omitempty"` // ms, while active
	RAM                   *RAMStats       `json:"ram,omitempty"`
	XBZRLECache           *XBZRLEStats    `json:"xbzrle-cache,omitempty"`
	CPUThrottlePercentage *int64          `json:"cpu-throttle-percentage,omitempty"`
	ErrorDesc             string          `json:"error-desc,omitempty"`
	BlockedReasons        []string        `json:"blocked-reasons,omitempty"`
	SocketAddress         []SocketAddress `json:"socket-address,omitempty"` // destination: where it listens
}

// RAMStats is the "ram" member of query-migrate (MigrationStats). Byte counts
// unless named otherwise.
type RAMStats struct {
	Transferred    int64   `json:"transferred"`
	Remaining      int64   `json:"remaining"`
	Total          int64   `json:"total"`
	Duplicate      int64   `json:"duplicate"` // pages found to be zero
	Normal         int64   `json:"normal"`    // pages sent in full
	NormalBytes    int64   `json:"normal-bytes"`
	DirtySyncCount int64   `json:"dirty-sync-count"`
	PrecopyBytes   int64   `json:"precopy-bytes"`
	DowntimeBytes  int64   `json:"downtime-bytes"`
	PostcopyBytes  int64   `json:"postcopy-bytes"`
	MultifdBytes   int64   `json:"multifd-bytes"`
	DirtyPagesRate int64   `json:"dirty-pages-rate"` // pages/s
	Mbps           float64 `json:"mbps"`
	PagesPerSecond int64   `json:"pages-per-second"`
	PageSize       int64   `json:"page-size"`
}

// XBZRLEStats is the "xbzrle-cache" member of query-migrate.
type XBZRLEStats struct {
	CacheSize     int64   `json:"cache-size"`
	Bytes         int64   `json:"bytes"`
	Pages         int64   `json:"pages"`
	CacheMiss     int64   `json:"cache-miss"`
	CacheMissRate float64 `json:"cache-miss-rate"`
	Overflow      int64   `json:"overflow"`
}

// SocketAddress is QEMU's SocketAddress union, flattened: Type is "inet"
// (Host, Port), "unix" (Path), "vsock" or "fd". Port is a string on the wire.
type SocketAddress struct {
	Type string `json:"type"`
	Host string `json:"host,omitempty"`
	Port string `json:"port,omitempty"`
	Path string `json:"path,omitempty"`
}

// MigrationParameters is the argument of migrate-set-parameters and the
// reply of query-migrate-parameters (MigrateSetParameters and
// MigrationParameters in qapi/migration.json). Nil fields are not sent; a
// query fills the fields the running QEMU knows. Unknown fields are ignored.
type MigrationParameters struct {
	DowntimeLimit            *uint64 `json:"downtime-limit,omitempty"`             // ms
	MaxBandwidth             *uint64 `json:"max-bandwidth,omitempty"`              // bytes/s
	AvailSwitchoverBandwidth *uint64 `json:"avail-switchover-bandwidth,omitempty"` // bytes/s, QEMU 8.2+
	MaxPostcopyBandwidth     *uint64 `json:"max-postcopy-bandwidth,omitempty"`     // bytes/s
	XBZRLECacheSize          *uint64 `json:"xbzrle-cache-size,omitempty"`          // bytes
	MultifdChannels          *int    `json:"multifd-channels,omitempty"`
	MultifdCompression       *string `json:"multifd-compression,omitempty"` // "none", "zlib", "zstd"
	MultifdZstdLevel         *int    `json:"multifd-zstd-level,omitempty"`  // 0..20, default 1
	AnnounceInitial          *uint64 `json:"announce-initial,omitempty"`    // ms
	AnnounceMax              *uint64 `json:"announce-max,omitempty"`        // ms
	AnnounceRounds           *uint64 `json:"announce-rounds,omitempty"`
	AnnounceStep             *uint64 `json:"announce-step,omitempty"` // ms
	ThrottleTriggerThreshold *int    `json:"throttle-trigger-threshold,omitempty"`
	CPUThrottleInitial       *int    `json:"cpu-throttle-initial,omitempty"`   // percent
	CPUThrottleIncrement     *int    `json:"cpu-throttle-increment,omitempty"` // percent
	CPUThrottleTailslow      *bool   `json:"cpu-throttle-tailslow,omitempty"`
	MaxCPUThrottle           *int    `json:"max-cpu-throttle,omitempty"` // percent
	TLSCreds                 *string `json:"tls-creds,omitempty"`
	TLSHostname              *string `json:"tls-hostname,omitempty"`
	TLSAuthz                 *string `json:"tls-authz,omitempty"`
}

// QueryMigrate returns the state and statistics of the current or last
// migration (query-migrate).
func (c *Client) QueryMigrate(ctx context.Context) (MigrationInfo, error) {
	var info MigrationInfo
	err := c.Execute(ctx, "query-migrate", nil, &info)
	return info, err
}

// Migrate starts an outgoing migration to uri ("unix:/path", "tcp:host:port",
// "exec:cmd", "fd:name"). QEMU replies as soon as the migration has started;
// its outcome arrives as MIGRATION events or in QueryMigrate.
func (c *Client) Migrate(ctx context.Context, uri string) error {
	return c.Execute(ctx, "migrate", struct {
		URI string `json:"uri"`
	}{uri}, nil)
}

// MigrateIncoming makes a QEMU started with "-incoming defer" listen on uri.
func (c *Client) MigrateIncoming(ctx context.Context, uri string) error {
	return c.Execute(ctx, "migrate-incoming", struct {
		URI string `json:"uri"`
	}{uri}, nil)
}

// MigrateSetCapabilities sets migration capabilities (migrate-set-capabilities).
func (c *Client) MigrateSetCapabilities(ctx context.Context, caps ...Capability) error {
	if caps == nil {
		caps = []Capability{}
	}
	return c.Execute(ctx, "migrate-set-capabilities", struct {
		Capabilities []Capability `json:"capabilities"`
	}{caps}, nil)
}

// QueryMigrateCapabilities returns every migration capability QEMU knows and
// its state.
func (c *Client) QueryMigrateCapabilities(ctx context.Context) ([]Capability, error) {
	var caps []Capability
	err := c.Execute(ctx, "query-migrate-capabilities", nil, &caps)
	return caps, err
}

// MigrateSetParameters sets the non-nil fields of p.
func (c *Client) MigrateSetParameters(ctx context.Context, p MigrationParameters) error {
	return c.Execute(ctx, "migrate-set-parameters", p, nil)
}

// QueryMigrateParameters returns the current migration parameters.
func (c *Client) QueryMigrateParameters(ctx context.Context) (MigrationParameters, error) {
	var p MigrationParameters
	err := c.Execute(ctx, "query-migrate-parameters", nil, &p)
	return p, err
}

// MigrateCancel cancels the outgoing migration (migrate_cancel). QEMU replies
// at once; the migration passes through "cancelling" to "cancelled".
func (c *Client) MigrateCancel(ctx context.Context) error {
	return c.Execute(ctx, "migrate_cancel", nil, nil)
}

// MigrateContinue lets a migration waiting in state (with the
// pause-before-switchover capability: "pre-switchover") go on.
func (c *Client) MigrateContinue(ctx context.Context, state string) error {
	return c.Execute(ctx, "migrate-continue", map[string]string{"state": state}, nil)
}
