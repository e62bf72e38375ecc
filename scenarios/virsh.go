package scenarios

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
	"libvirt.org/go/libvirt"

	"github.com/vmigrate/vmigrate/lab"
	"github.com/vmigrate/vmigrate/migrate"
	"github.com/vmigrate/vmigrate/probe"
	"github.com/vmigrate/vmigrate/wanlink"
)

// virshMigrate is the baseline of the libvirt path: plain `virsh migrate
// --live` (managed, libvirt's and QEMU's own rules, no tunnel, no codec),
// its unix:// stream through the same emulated link as vmigrate's, so the
// two are compared on equal terms. Only the link is vmigrate's.
//
// timeout, when set, is virsh's --timeout: libvirt suspends the domain
// after that long, forcing the stop-and-copy (vmigrate's --max-time with
// --on-budget stop is the like of it). onLink, when set, is given the
// emulated link once it exists.
func virshMigrate(ctx context.Context, l *lab.LibvirtLab, link *wanlink.Config, timeout time.Duration, pr *probe.Config, onLink func(*wanlink.Link)) (migrate.Result, error) {
	res := migrate.Result{Status: migrate.StatusFailed, StreamBytesSource: "link", Passes: []migrate.Pass{}, Policy: "virsh (qemu)"}
	o := LibvirtLabOptions(l, "virsh.sock")
	cfg := wanlink.Config{}
	if link != nil {
		cfg = *link
	}
	lk, err := wanlink.New(cfg, zap.NewNop())
	if err != nil {
		return res, err
	}
	defer lk.Close()
	if onLink != nil {
		onLink(lk)
	}
	ln, err := net.Listen("unix", o.ListenSocket)
	if err != nil {
		return res, fmt.Errorf("virsh baseline: %w", err)
	}
	lctx, stop := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { // ends when lctx ends and the listener closes
		var d net.Dialer
		served <- wanlink.Serve(lctx, ln, func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "unix", o.ForwardSocket) }, lk)
	}()
	defer func() { stop(); ln.Close(); <-served; os.Remove(o.ListenSocket) }()

	var prober *probe.Prober
	if pr != nil {
		prober = probe.Start(ctx, *pr)
	}
	start := time.Now()
	args := []string{"-c", o.SrcURI, "migrate", "--live", "--persistent", "--undefinesource",
		o.Domain, o.DstURI, "--migrateuri", "unix://" + o.StreamSocket}
	if timeout > 0 {
		args = append(args, "--timeout", strconv.Itoa(int(timeout.Seconds())))
		res.Policy = fmt.Sprintf("virsh (qemu, --timeout %d)", int(timeout.Seconds()))
	}
	cmd := exec.CommandContext(ctx, "virsh", args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	res.TotalMS = time.Since(start).Milliseconds()
	if prober != nil {
		if err == nil {
			wctx, cancel := context.WithTimeout(ctx, time.Minute)
			prober.WaitAnswer(wctx, time.Now())
			cancel()
		}
		p := prober.Stop()
		res.Probe = &p
		res.ObservedDowntimeMS = p.MaxGapMS
	}
	st := lk.Stats()
	res.StreamBytes, res.WireBytes = st.Forward.Bytes, st.Forward.Bytes+st.Reverse.Bytes
	if err != nil {
		res.Error = fmt.Sprintf("virsh migrate: %v: %s", err, strings.TrimSpace(out.String()))
		return res, errors.New(res.Error)
	}
	res.Status = migrate.StatusCompleted
	res.SourceStatus, res.DestStatus = "undefined", "running"
	if c, err := libvirt.NewConnect(o.DstURI); err == nil {
		if d, err := c.LookupDomainByName(o.Domain); err == nil {
			if j, err := d.GetJobStats(libvirt.DOMAIN_JOB_STATS_COMPLETED); err == nil {
				res.DowntimeMS, res.QEMUTotal = int64(j.Downtime), int64(j.TimeElapsed)
				res.RAMBytes, res.RAMTransferred = int64(j.MemTotal), int64(j.MemProcessed)
			}
			d.Free()
		}
		c.Close()
	}
	return res, nil
}
