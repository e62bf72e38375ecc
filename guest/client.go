package guest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/vmigrate/vmigrate/guest/agentapi"
	"github.com/vmigrate/vmigrate/guest/workload"
)

// maxReply bounds a reply body read by the client.
const maxReply = 1 << 20

// Client talks to the guest agent's HTTP API.
type Client struct {
	HTTP *http.Client // nil means http.DefaultClient
	Addr string       // host:port reaching the agent, e.g. 127.0.0.1:40080
}

// StatusError is a reply with an unexpected HTTP status; Body is the agent's
// explanation.
type StatusError struct {
	Method, Path string
	Code         int
	Body         string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("%s %s: HTTP %d: %s", e.Method, e.Path, e.Code, e.Body)
}

// Status fetches GET /status.
func (c *Client) Status(ctx context.Context) (agentapi.Status, error) {
	var st agentapi.Status
	if err := c.doJSON(ctx, http.MethodGet, agentapi.PathStatus, nil, &st); err != nil {
		return agentapi.Status{}, fmt.Errorf("guest status: %w", err)
	}
	return st, nil
}

// Verify runs GET /verify. When no memdirty workload is populated the error
// wraps workload.ErrNotPopulated.
func (c *Client) Verify(ctx context.Context) (agentapi.VerifyResult, error) {
	var r agentapi.VerifyResult
	err := c.doJSON(ctx, http.MethodGet, agentapi.PathVerify, nil, &r)
	if se := (*StatusError)(nil); errors.As(err, &se) && se.Code == http.StatusConflict {
		err = fmt.Errorf("%w (%w)", workload.ErrNotPopulated, err)
	}
	if err != nil {
		return agentapi.VerifyResult{}, fmt.Errorf("guest verify: %w", err)
	}
	return r, nil
}

// SetWorkload replaces the guest's workload (POST /workload) and returns the
// new workload's status, defaults applied.
func (c *Client) SetWorkload(ctx context.Context, cfg workload.Config) (agentapi.WorkloadStatus, error) {
	body, err := json.Marshal(cfg)
	if err != nil {
		return agentapi.WorkloadStatus{}, fmt.Errorf("guest set workload: %w", err)
	}
	var ws agentapi.WorkloadStatus
	if err := c.doJSON(ctx, http.MethodPost, agentapi.PathWorkload, body, &ws); err != nil {
		return agentapi.WorkloadStatus{}, fmt.Errorf("guest set workload: %w", err)
	}
	return ws, nil
}

// Ping runs GET /ping and returns the agent's ping counter.
func (c *Client) Ping(ctx context.Context) (uint64, error) {
	b, err := c.do(ctx, http.MethodGet, agentapi.PathPing, nil)
	if err != nil {
		return 0, fmt.Errorf("guest ping: %w", err)
	}
	seq, ok := strings.CutPrefix(strings.TrimSpace(string(b)), "pong ")
	n, err := strconv.ParseUint(seq, 10, 64)
	if !ok || err != nil {
		return 0, fmt.Errorf("guest ping: unexpected answer %q", b)
	}
	return n, nil
}

// Index fetches the static page GET /.
func (c *Client) Index(ctx context.Context) ([]byte, error) {
	b, err := c.do(ctx, http.MethodGet, agentapi.PathIndex, nil)
	if err != nil {
		return nil, fmt.Errorf("guest index: %w", err)
	}
	return b, nil
}

func (c *Client) doJSON(ctx context.Context, method, path string, body []byte, out any) error {
	b, err := c.do(ctx, method, path, body)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s %s: decode reply: %w", method, path, err)
	}
	return nil
}

func (c *Client) do(ctx context.Context, method, path string, body []byte) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+c.Addr+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxReply))
	if err != nil {
		return nil, fmt.Errorf("%s %s: read reply: %w", method, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, &StatusError{Method: method, Path: path, Code: resp.StatusCode, Body: strings.TrimSpace(string(b))}
	}
	return b, nil
}
