package qmp

import (
	"context"
	"encoding/json"
	"fmt"
)

// Block-job events (QEMU's qapi/block-core.json, job.json).
const (
	EventBlockJobReady     = "BLOCK_JOB_READY"     // data: BlockJobEvent; a mirror reached sync
	EventBlockJobCompleted = "BLOCK_JOB_COMPLETED" // data: BlockJobEvent; Error set when it failed
	EventBlockJobCancelled = "BLOCK_JOB_CANCELLED" // data: BlockJobEvent
	EventBlockJobError     = "BLOCK_JOB_ERROR"     // an I/O error in a job
)

// Mirror copy modes (qapi MirrorCopyMode).
const (
	CopyModeBackground    = "background"     // guest writes are copied later, from the dirty bitmap
	CopyModeWriteBlocking = "write-blocking" // guest writes complete only once copied to the target
)

// BlockJobEvent is the data of the BLOCK_JOB_* events.
type BlockJobEvent struct {
	Type   string `json:"type"`
	Device string `json:"device"` // the job ID
	Len    int64  `json:"len"`
	Offset int64  `json:"offset"`
	Speed  int64  `json:"speed"`
	Error  string `json:"error,omitempty"`
}

// BlockJob decodes the data of a BLOCK_JOB_* event.
func (e Event) BlockJob() (BlockJobEvent, error) {
	var b BlockJobEvent
	if err := json.Unmarshal(e.Data, &b); err != nil {
		return b, fmt.Errorf("qmp: %s event: %w", e.Name, err)
	}
	return b, nil
}

// BlockJobInfo is one entry of query-block-jobs.
type BlockJobInfo struct {
	Type   string `json:"type"`
	Device string `json:"device"` // the job ID
	Len    int64  `json:"len"`    // total work, bytes; grows as the guest dirties
	Offset int64  `json:"offset"` // work done
	Busy   bool   `json:"busy"`
	Paused bool   `json:"paused"`
	Speed  int64  `json:"speed"`
	Ready  bool   `json:"ready"`
	Status string `json:"status"`
	Error  string `json:"error,omitempty"`
}

// QueryBlockJobs lists the running block jobs.
func (c *Client) QueryBlockJobs(ctx context.Context) ([]BlockJobInfo, error) {
	var jobs []BlockJobInfo
	err := c.Execute(ctx, "query-block-jobs", nil, &jobs)
	return jobs, err
}

// UnixAddress is a SocketAddress of type unix.
type UnixAddress struct {
	Type string `json:"type"` // "unix"
	Path string `json:"path"`
}

// Unix returns the SocketAddress of a unix socket.
func Unix(path string) UnixAddress { return UnixAddress{Type: "unix", Path: path} }

// NBDServerStart starts the NBD server on a unix socket. Its address is
// a SocketAddressLegacy (the path nested in "data"), unlike blockdev-add's.
func (c *Client) NBDServerStart(ctx context.Context, path string) error {
	return c.Execute(ctx, "nbd-server-start", map[string]any{"addr": map[string]any{"type": "unix", "data": map[string]string{"path": path}}}, nil)
}

// NBDServerStop stops the NBD server and removes its exports.
func (c *Client) NBDServerStop(ctx context.Context) error {
	return c.Execute(ctx, "nbd-server-stop", nil, nil)
}

// BlockExportAddNBD exports a block node over the running NBD server
// (block-export-add, QEMU 5.2+), writable for a mirror's target.
func (c *Client) BlockExportAddNBD(ctx context.Context, id, node, name string, writable bool) error {
	return c.Execute(ctx, "block-export-add", map[string]any{
		"type": "nbd", "id": id, "node-name": node, "name": name, "writable": writable,
	}, nil)
}

// BlockdevAddNBD adds a node that is an NBD client of export on a unix
// socket.
func (c *Client) BlockdevAddNBD(ctx context.Context, node, path, export string) error {
	return c.Execute(ctx, "blockdev-add", map[string]any{
		"driver": "nbd", "node-name": node, "server": Unix(path), "export": export,
	}, nil)
}

// BlockdevDel removes a node added with blockdev-add.
func (c *Client) BlockdevDel(ctx context.Context, node string) error {
	return c.Execute(ctx, "blockdev-del", map[string]any{"node-name": node}, nil)
}

// MirrorArgs are the arguments of blockdev-mirror.
type MirrorArgs struct {
	JobID       string `json:"job-id"`
	Device      string `json:"device"` // the source node
	Target      string `json:"target"` // the target node
	Sync        string `json:"sync"`   // full, top or none
	CopyMode    string `json:"copy-mode,omitempty"`
	Granularity int64  `json:"granularity,omitempty"` // dirty-bitmap granularity, a power of 2 from 512 B to 64 MiB
	Speed       int64  `json:"speed,omitempty"`
}

// BlockdevMirror starts a mirror job.
func (c *Client) BlockdevMirror(ctx context.Context, a MirrorArgs) error {
	return c.Execute(ctx, "blockdev-mirror", a, nil)
}

// BlockJobCancel cancels a job. On a mirror that is ready and not forced,
// it completes with a point-in-time copy (BLOCK_JOB_COMPLETED) and the
// source keeps its own disk; forced, it stops at once (BLOCK_JOB_CANCELLED).
func (c *Client) BlockJobCancel(ctx context.Context, id string, force bool) error {
	return c.Execute(ctx, "block-job-cancel", map[string]any{"device": id, "force": force}, nil)
}

// BlockJobSetSpeed changes a job's speed limit (0: none).
func (c *Client) BlockJobSetSpeed(ctx context.Context, id string, speed int64) error {
	return c.Execute(ctx, "block-job-set-speed", map[string]any{"device": id, "speed": speed}, nil)
}

// HumanMonitorCommand runs an HMP command (tests use qemu-io through it).
func (c *Client) HumanMonitorCommand(ctx context.Context, cmd string) (string, error) {
	var out string
	err := c.Execute(ctx, "human-monitor-command", map[string]any{"command-line": cmd}, &out)
	return out, err
}

// BlockNode is one entry of query-named-block-nodes (BlockDeviceInfo),
// the fields vmigrate reads.
type BlockNode struct {
	NodeName string `json:"node-name"`
	Driver   string `json:"drv"`  // the format (raw, qcow2) or protocol (file, nbd) driver
	File     string `json:"file"` // the image's file name
	ReadOnly bool   `json:"ro"`
	Image    struct {
		VirtualSize int64  `json:"virtual-size"`
		ClusterSize int64  `json:"cluster-size,omitempty"`
		Format      string `json:"format"`
	} `json:"image"`
}

// QueryNamedBlockNodes lists every block node, children included (flat).
func (c *Client) QueryNamedBlockNodes(ctx context.Context) ([]BlockNode, error) {
	var nodes []BlockNode
	err := c.Execute(ctx, "query-named-block-nodes", map[string]any{"flat": true}, &nodes)
	return nodes, err
}
