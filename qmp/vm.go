package qmp

import (
	"context"
	"errors"
)

// Run states, from QEMU's qapi/run-state.json (RunState), as seen in
// StatusInfo.Status.
const (
	RunStateRunning       = "running"
	RunStatePaused        = "paused"
	RunStateInMigrate     = "inmigrate"      // waiting for an incoming migration
	RunStatePostMigrate   = "postmigrate"    // stopped after an outgoing migration completed
	RunStateFinishMigrate = "finish-migrate" // stopped for the final migration pass
	RunStatePrelaunch     = "prelaunch"
	RunStateShutdown      = "shutdown"
	RunStateInternalError = "internal-error"
	RunStateIOError       = "io-error"
)

// StatusInfo is the reply of query-status.
type StatusInfo struct {
	Status  string `json:"status"` // one of the RunState* constants
	Running bool   `json:"running"`
}

// QueryStatus returns the VM's run state (query-status).
func (c *Client) QueryStatus(ctx context.Context) (StatusInfo, error) {
	var s StatusInfo
	err := c.Execute(ctx, "query-status", nil, &s)
	return s, err
}

// Stop pauses the VM's CPUs. QEMU sends a STOP event.
func (c *Client) Stop(ctx context.Context) error { return c.Execute(ctx, "stop", nil, nil) }

// Cont resumes the VM's CPUs. QEMU sends a RESUME event.
func (c *Client) Cont(ctx context.Context) error { return c.Execute(ctx, "cont", nil, nil) }

// Quit makes QEMU exit. QEMU closes the monitor right after its reply, and
// the connection may close before the reply is read: once the command was
// sent, a closed connection counts as success. The client is unusable
// afterwards; Close it.
func (c *Client) Quit(ctx context.Context) error {
	sent, err := c.execute(ctx, "quit", nil, nil)
	if err != nil && sent && ctx.Err() == nil && errors.Is(err, ErrClosed) && c.droppedByPeer() {
		return nil
	}
	return err
}

// KVMInfo is the reply of query-kvm: whether the VM runs under KVM
// (Enabled) and whether KVM is available to this QEMU (Present).
type KVMInfo struct {
	Enabled bool `json:"enabled"`
	Present bool `json:"present"`
}

// QueryKVM reports whether the VM is accelerated by KVM; false means TCG.
func (c *Client) QueryKVM(ctx context.Context) (KVMInfo, error) {
	var k KVMInfo
	err := c.Execute(ctx, "query-kvm", nil, &k)
	return k, err
}
