package migrate_test

import (
	"context"
	"crypto/rand"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	"libvirt.org/go/libvirt"

	"github.com/vmigrate/vmigrate/blockcodec"
	"github.com/vmigrate/vmigrate/guest/workload"
	"github.com/vmigrate/vmigrate/lab"
	"github.com/vmigrate/vmigrate/lab/labtest"
	"github.com/vmigrate/vmigrate/migrate"
	"github.com/vmigrate/vmigrate/pagecodec"
	"github.com/vmigrate/vmigrate/scenarios"
	"github.com/vmigrate/vmigrate/stopcopy"
	"github.com/vmigrate/vmigrate/tunnel"
	"github.com/vmigrate/vmigrate/wanlink"
	"github.com/vmigrate/vmigrate/wanpath"
)

// The libvirt lab's guest: small enough for a 100 Mbit/s link in a test.
const (
	virtMem = 256 << 20
	virtWSS = 64 << 20
)

func virtLab(t *testing.T) *lab.LibvirtLab {
	t.Helper()
	return labtest.StartLibvirt(t, virtMem, workload.Config{Name: workload.MemDirty, WSSBytes: virtWSS, PagesPerSec: 2000, BytesPerPage: 8})
}

// virtOptions migrate l's domain from side from to the other side through
// a socket of the lab's migration directory.
func virtOptions(t *testing.T, l *lab.LibvirtLab, reverse bool) migrate.LibvirtOptions {
	o := scenarios.LibvirtLabOptions(l, "t.sock")
	if reverse {
		o.SrcURI, o.DstURI = o.DstURI, o.SrcURI
		o.ListenSocket, o.ForwardSocket = o.ForwardSocket, o.ListenSocket
	}
	o.Log = zaptest.NewLogger(t)
	return o
}

// wanCodec is the tunnel with the page codec over an emulated 100 Mbit/s,
// 50 ms link, both ends in this process.
func wanCodec(t *testing.T) *wanpath.Path {
	t.Helper()
	k := make([]byte, 32)
	rand.Read(k)
	link := wanlink.Config{Bandwidth: 100e6, RTT: 50 * time.Millisecond}
	p, err := wanpath.New(wanpath.Config{Dir: t.TempDir(), Link: &link, Tunnel: tunnel.Config{PSK: k}, DestTunnel: tunnel.Config{PSK: k},
		Codec: pagecodec.New(pagecodec.Config{}), DiskCodec: &blockcodec.Config{}, Log: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func connect(t *testing.T, uri string) *libvirt.Connect {
	t.Helper()
	c, err := libvirt.NewConnect(uri)
	if err != nil {
		t.Fatalf("connect %s: %v", uri, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// domState is the domain's state on a host: "running", "shut off", or
// "absent" when the host does not have it.
func domState(t *testing.T, uri, name string) string {
	t.Helper()
	c := connect(t, uri)
	d, err := c.LookupDomainByName(name)
	if err != nil {
		var le libvirt.Error
		if errors.As(err, &le) && le.Code == libvirt.ERR_NO_DOMAIN {
			return "absent"
		}
		t.Fatalf("lookup %s on %s: %v", name, uri, err)
	}
	defer d.Free()
	st, _, err := d.GetState()
	if err != nil {
		t.Fatal(err)
	}
	switch st {
	case libvirt.DOMAIN_RUNNING:
		return "running"
	case libvirt.DOMAIN_SHUTOFF:
		return "shut off"
	case libvirt.DOMAIN_PAUSED:
		return "paused"
	}
	return "other"
}

func maxDowntime(t *testing.T, uri, name string) uint64 {
	t.Helper()
	d, err := connect(t, uri).LookupDomainByName(name)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Free()
	ms, err := d.MigrateGetMaxDowntime(0)
	if err != nil {
		t.Fatal(err)
	}
	return ms
}

func persistent(t *testing.T, uri, name string) bool {
	t.Helper()
	d, err := connect(t, uri).LookupDomainByName(name)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Free()
	p, err := d.IsPersistent()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// sourceKept asserts the failure left the domain running on the source
// with its memory intact and nothing on the destination.
func sourceKept(t *testing.T, l *lab.LibvirtLab, o migrate.LibvirtOptions, err error) {
	t.Helper()
	var me *migrate.Error
	if !errors.As(err, &me) || !me.SourceRunning || me.VMOnDest {
		t.Fatalf("err %v: want a migrate.Error with the source running", err)
	}
	if s := domState(t, o.SrcURI, o.Domain); s != "running" {
		t.Errorf("source domain %s, want running", s)
	}
	if s := domState(t, o.DstURI, o.Domain); s != "absent" {
		t.Errorf("destination domain %s, want absent", s)
	}
	labtest.LibvirtIntact(t, l, virtWSS/4096)
}

// One lab, moved back and forth: refusals first (nothing may change),
// then failures (the domain must stay on the source), then a migration
// with each stop policy through the tunnel, codec and a 100 Mbit/s 50 ms
// link, alternating direction.
func TestLibvirtMigrations(t *testing.T) {
	l := virtLab(t)
	reverse := false // the domain is on l.SrcURI while false

	t.Run("refusals", func(t *testing.T) {
		o := virtOptions(t, l, false)
		cases := []struct {
			name   string
			change func(o *migrate.LibvirtOptions)
			want   error
			text   string
		}{
			{"unknown domain", func(o *migrate.LibvirtOptions) { o.Domain = "nosuch" }, migrate.ErrNoDomain, "nosuch"},
			{"unreachable destination", func(o *migrate.LibvirtOptions) { o.DstURI = "qemu+unix:///system?socket=/nonexistent/libvirt-sock" }, migrate.ErrUnreachable, "/nonexistent"},
			{"same host", func(o *migrate.LibvirtOptions) { o.DstURI = o.SrcURI }, nil, "same libvirt host"},
		}
		for _, tc := range cases {
			oo := o
			tc.change(&oo)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			_, err := migrate.RunLibvirt(ctx, oo)
			cancel()
			var me *migrate.Error
			if err == nil || !errors.As(err, &me) || me.Stage != migrate.StagePreflight || (tc.want != nil && !errors.Is(err, tc.want)) || !strings.Contains(err.Error(), tc.text) {
				t.Errorf("%s: err %v, want a preflight error %v mentioning %q", tc.name, err, tc.want, tc.text)
			}
		}
		// The destination runs a domain of that name.
		dst := connect(t, l.DstURI)
		// No NIC and no console: it must not answer for the guest nor
		// write the guest's console log.
		x := stripElement(stripElement(stripElement(stripUUID(l.DomainXML), "interface"), "serial"), "console")
		d, err := dst.DomainCreateXML(x, 0)
		if err != nil {
			t.Fatalf("start a same-named domain on the destination: %v", err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		_, err = migrate.RunLibvirt(ctx, o)
		cancel()
		if !errors.Is(err, migrate.ErrDomainOnDest) {
			t.Errorf("err %v, want ErrDomainOnDest", err)
		}
		d.Destroy()
		d.Free()
		// libvirt refuses: the destination knows the domain's UUID under
		// another name. Its message is passed on.
		src := connect(t, l.SrcURI)
		sd, err := src.LookupDomainByName(l.Domain)
		if err != nil {
			t.Fatal(err)
		}
		uuid, _ := sd.GetUUIDString()
		sd.Free()
		other := strings.Replace(l.DomainXML, "<name>"+l.Domain+"</name>", "<name>other</name><uuid>"+uuid+"</uuid>", 1)
		od, err := dst.DomainDefineXML(stripUUIDAfterName(other))
		if err != nil {
			t.Fatalf("define a domain with the same UUID on the destination: %v", err)
		}
		ctx, cancel = context.WithTimeout(context.Background(), time.Minute)
		_, err = migrate.RunLibvirt(ctx, o)
		cancel()
		var le *migrate.LibvirtError
		if err == nil || !errors.As(err, &le) || !strings.Contains(err.Error(), "other") {
			t.Errorf("err %v, want libvirt's refusal naming the domain 'other'", err)
		}
		od.Undefine()
		od.Free()
		sourceKept(t, l, o, err)
	})

	t.Run("cancelled", func(t *testing.T) {
		o := virtOptions(t, l, reverse)
		o.Transport = wanCodec(t)
		o.Policy = stopcopy.Smart{Window: 5}
		before := maxDowntime(t, o.SrcURI, o.Domain)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var once sync.Once
		o.Progress = func(p migrate.Progress) {
			if p.Phase == migrate.PhasePrecopy && p.TransferredBytes > 8<<20 {
				once.Do(cancel)
			}
		}
		_, err := migrate.RunLibvirt(ctx, o)
		var me *migrate.Error
		if !errors.As(err, &me) || !me.Cancelled {
			t.Fatalf("err %v, want a cancelled migration", err)
		}
		sourceKept(t, l, o, err)
		if after := maxDowntime(t, o.SrcURI, o.Domain); after != before {
			t.Errorf("downtime limit %d ms after the cancelled migration, was %d: the policy's hold was not undone", after, before)
		}
	})

	t.Run("tunnel cut", func(t *testing.T) {
		o := virtOptions(t, l, reverse)
		path := wanCodec(t)
		o.Transport = path
		var once sync.Once
		o.Progress = func(p migrate.Progress) {
			if p.Phase == migrate.PhasePrecopy && p.TransferredBytes > 8<<20 {
				once.Do(func() { go path.Close() })
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		_, err := migrate.RunLibvirt(ctx, o)
		sourceKept(t, l, o, err)
	})

	for _, policy := range []string{"smart", "xen", "qemu"} {
		t.Run("policy "+policy, func(t *testing.T) {
			o := virtOptions(t, l, reverse)
			o.Transport = wanCodec(t)
			p, err := stopcopy.Parse(policy, 5)
			if err != nil {
				t.Fatal(err)
			}
			o.Policy = p
			// The last one keeps the source's definition, shut off.
			o.KeepSource = policy == "qemu"
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			res, err := migrate.RunLibvirt(ctx, o)
			if err != nil {
				t.Fatalf("migrate: %v", err)
			}
			reverse = !reverse
			t.Logf("%s: %d ms, downtime %d ms, wire %d of stream %d, passes %d, decision %+v", policy, res.TotalMS, res.DowntimeMS, res.WireBytes, res.StreamBytes, len(res.Passes), res.Decision)
			if res.Status != migrate.StatusCompleted || res.Policy != policy || res.Codec == nil || res.WireBytes == 0 || res.StreamBytesSource != "wan" {
				t.Errorf("result %+v", res)
			}
			if len(res.Passes) == 0 || res.RAMBytes == 0 {
				t.Errorf("no passes or RAM figures from libvirt's job: %+v", res)
			}
			if policy != "qemu" && (res.Decision == nil || res.Decision.Action != "stop-and-copy") {
				t.Errorf("policy %s made no decision: %+v", policy, res.Decision)
			}
			if s := domState(t, o.DstURI, o.Domain); s != "running" || !persistent(t, o.DstURI, o.Domain) {
				t.Errorf("destination domain %s (persistent %v), want running and defined", s, s != "absent" && persistent(t, o.DstURI, o.Domain))
			}
			want := "absent"
			if o.KeepSource {
				want = "shut off"
			}
			if s := domState(t, o.SrcURI, o.Domain); s != want {
				t.Errorf("source domain %s, want %s", s, want)
			}
			labtest.LibvirtIntact(t, l, virtWSS/4096)
		})
	}

	t.Run("keep source, destination daemon killed", func(t *testing.T) {
		o := virtOptions(t, l, reverse)
		o.KeepSource = true
		o.Transport = wanCodec(t)
		side := "dst"
		if reverse {
			side = "src"
		}
		var once sync.Once
		o.Progress = func(p migrate.Progress) {
			if p.Phase == migrate.PhasePrecopy && p.TransferredBytes > 8<<20 {
				once.Do(func() {
					if err := l.KillDaemon(side); err != nil {
						t.Errorf("kill the destination daemon: %v", err)
					}
				})
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		_, err := migrate.RunLibvirt(ctx, o)
		var me *migrate.Error
		if !errors.As(err, &me) || !me.SourceRunning || me.VMOnDest {
			t.Fatalf("err %v: want a failure with the source running", err)
		}
		if s := domState(t, o.SrcURI, o.Domain); s != "running" {
			t.Errorf("source domain %s, want running", s)
		}
		// The destination's daemon, back, reaps the incoming domain its
		// predecessor left: nothing runs there, and only the definition
		// the previous migration kept (--keep-source) stays.
		rctx, rcancel := context.WithTimeout(context.Background(), time.Minute)
		defer rcancel()
		if err := l.RestartDaemon(rctx, side); err != nil {
			t.Fatalf("restart the destination daemon: %v", err)
		}
		var s string
		for i := 0; i < 100; i++ {
			if s = domState(t, o.DstURI, o.Domain); s == "shut off" {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if s != "shut off" {
			t.Errorf("destination domain %s after its daemon restarted, want the kept definition, shut off", s)
		}
		labtest.LibvirtIntact(t, l, virtWSS/4096)
	})
}

// stripUUID removes a <uuid> element, so libvirt makes a new one.
func stripUUID(x string) string {
	i := strings.Index(x, "<uuid>")
	if i < 0 {
		return x
	}
	j := strings.Index(x[i:], "</uuid>")
	return x[:i] + x[i+j+len("</uuid>"):]
}

// stripElement removes every <name ...>...</name> element (not nested).
func stripElement(x, name string) string {
	for {
		i := strings.Index(x, "<"+name+" ")
		if i < 0 {
			i = strings.Index(x, "<"+name+">")
		}
		if i < 0 {
			return x
		}
		j := strings.Index(x[i:], "</"+name+">")
		if j < 0 {
			return x
		}
		x = x[:i] + x[i+j+len("</"+name+">"):]
	}
}

// stripUUIDAfterName removes a second <uuid> element, keeping the first.
func stripUUIDAfterName(x string) string {
	i := strings.Index(x, "</uuid>")
	if i < 0 {
		return x
	}
	i += len("</uuid>")
	return x[:i] + stripUUID(x[i:])
}

// libvirt copies the domain's disk (VIR_MIGRATE_NON_SHARED_DISK, and
// NON_SHARED_SYNCHRONOUS_WRITES) to the
// destination's pre-created image over NBD, the NBD stream through
// vmigrate's tunnel and link; the guest wrote to the disk all along, and
// memory and disk verify on the destination.
func TestLibvirtMigrationWithDisk(t *testing.T) {
	const disk, dwss = 64 << 20, 16 << 20
	w := workload.Config{Name: workload.MemDirty, WSSBytes: virtWSS, PagesPerSec: 2000, BytesPerPage: 8,
		DiskWSSBytes: dwss, DiskWritesPerSec: 50}
	cfg := labtest.Config(t, virtMem, w)
	cfg.DiskBytes = disk
	l := labtest.StartLibvirtConfig(t, cfg)
	o := virtOptions(t, l, false)
	o.Disks = []string{lab.DiskNode}
	// Even 50 random 4 KiB writes a second keep a background mirror
	// from ever being idle across a 50 ms RTT (each dirties a 64 KiB
	// chunk, a round trip to copy), so it never reports ready; libvirt
	// has no switch to write-blocking mid-job, so it is on from the start.
	o.DiskWriteBlocking = true
	o.Transport = wanCodec(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	res, err := migrate.RunLibvirt(ctx, o)
	if err != nil {
		t.Fatalf("migrate: %v", err)
	}
	t.Logf("total %d ms, downtime %d ms, disks %+v, wire %d", res.TotalMS, res.DowntimeMS, res.Disks, res.WireBytes)
	if len(res.Disks) != 1 || res.Disks[0].SentBytes < dwss || res.Disks[0].Bytes < disk {
		t.Errorf("disk figures %+v: want the disk's NBD stream through the tunnel", res.Disks)
	}
	if s := domState(t, o.DstURI, o.Domain); s != "running" {
		t.Errorf("destination domain %s", s)
	}
	labtest.LibvirtIntact(t, l, virtWSS/4096)
	labtest.LibvirtIntactDisk(t, l, dwss/4096)
}
