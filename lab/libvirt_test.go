package lab_test

import (
	"context"
	"encoding/xml"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"libvirt.org/go/libvirt"

	"github.com/vmigrate/vmigrate/guest/workload"
	"github.com/vmigrate/vmigrate/lab"
	"github.com/vmigrate/vmigrate/lab/labtest"
)

func TestDomainSpecXML(t *testing.T) {
	base := lab.DomainSpec{
		Name: "vmigrate-guest", Accel: lab.AccelTCG, Emulator: "/q/qemu-system-x86_64", MemBytes: 256 << 20,
		Kernel: "/k", Initrd: "/i", Cmdline: "console=ttyS0 a=<b&c>", Bridge: "br0", MAC: "52:54:00:77:00:10",
		Serial: "/var/log/libvirt/g.serial",
	}
	tests := []struct {
		name    string
		mod     func(*lab.DomainSpec)
		want    []string // fragments that must appear
		absent  []string
		wantErr string
	}{
		{name: "tcg guest on the bridge", mod: func(*lab.DomainSpec) {},
			want: []string{`<domain type="qemu">`, `<name>vmigrate-guest</name>`, `<memory unit="KiB">262144</memory>`,
				`<vcpu>1</vcpu>`, `<type arch="x86_64" machine="q35">hvm</type>`, `<kernel>/k</kernel>`, `<initrd>/i</initrd>`,
				`<cmdline>console=ttyS0 a=&lt;b&amp;c&gt;</cmdline>`, `<acpi></acpi>`,
				`<on_reboot>destroy</on_reboot>`, `<emulator>/q/qemu-system-x86_64</emulator>`,
				`<interface type="bridge">`, `<source bridge="br0"></source>`, `<mac address="52:54:00:77:00:10"></mac>`,
				`<model type="virtio"></model>`, `<serial type="file">`, `<source path="/var/log/libvirt/g.serial" append="on">`,
				`<controller type="usb" model="none">`, `<memballoon model="none">`},
			absent: []string{"<graphics", "<video", "<cpu"}},
		{name: "kvm", mod: func(s *lab.DomainSpec) { s.Accel = lab.AccelKVM }, want: []string{`<domain type="kvm">`}},
		{name: "machine, cpus, 2G", mod: func(s *lab.DomainSpec) { s.Machine = "pc-q35-7.2"; s.CPUs = 2; s.MemBytes = 2 << 30 },
			want: []string{`machine="pc-q35-7.2"`, `<vcpu>2</vcpu>`, `<memory unit="KiB">2097152</memory>`}},
		{name: "no nic", mod: func(s *lab.DomainSpec) { s.Bridge = "" }, absent: []string{"<interface"}},
		{name: "nic without mac", mod: func(s *lab.DomainSpec) { s.MAC = "" }, want: []string{`<interface type="bridge">`}, absent: []string{"<mac"}},
		{name: "unknown accelerator", mod: func(s *lab.DomainSpec) { s.Accel = "hvf" }, wantErr: "neither kvm nor tcg"},
		{name: "odd memory", mod: func(s *lab.DomainSpec) { s.MemBytes++ }, wantErr: "whole number of MiB"},
		{name: "tiny memory", mod: func(s *lab.DomainSpec) { s.MemBytes = 32 << 20 }, wantErr: "at least 64 MiB"},
		{name: "no kernel", mod: func(s *lab.DomainSpec) { s.Initrd = "" }, wantErr: "kernel and initrd"},
		{name: "relative emulator", mod: func(s *lab.DomainSpec) { s.Emulator = "qemu-system-x86_64" }, wantErr: "absolute"},
		{name: "no name", mod: func(s *lab.DomainSpec) { s.Name = "" }, wantErr: "name"},
		{name: "no serial", mod: func(s *lab.DomainSpec) { s.Serial = "" }, wantErr: "serial"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := base
			tc.mod(&s)
			x, err := s.XML()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tc.want {
				if !strings.Contains(x, w) {
					t.Errorf("missing %s in\n%s", w, x)
				}
			}
			for _, a := range tc.absent {
				if strings.Contains(x, a) {
					t.Errorf("unexpected %s in\n%s", a, x)
				}
			}
			// Well-formed, and the command line survives escaping.
			var back struct {
				OS struct {
					Cmdline string `xml:"cmdline"`
				} `xml:"os"`
			}
			if err := xml.Unmarshal([]byte(x), &back); err != nil {
				t.Fatalf("not well-formed: %v", err)
			}
			if back.OS.Cmdline != s.Cmdline {
				t.Errorf("cmdline %q after a round trip, want %q", back.OS.Cmdline, s.Cmdline)
			}
		})
	}
}

// connect opens a libvirt connection for the length of the test.
func connect(t *testing.T, uri string) *libvirt.Connect {
	t.Helper()
	c, err := libvirt.NewConnect(uri)
	if err != nil {
		t.Fatalf("connect %s: %v", uri, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// domainNames lists a daemon's domains as name -> active.
func domainNames(t *testing.T, c *libvirt.Connect) map[string]bool {
	t.Helper()
	doms, err := c.ListAllDomains(0)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]bool{}
	for _, d := range doms {
		name, _ := d.GetName()
		m[name], _ = d.IsActive()
		d.Free()
	}
	return m
}

type hostCaps struct {
	Host struct {
		UUID string `xml:"uuid"`
	} `xml:"host"`
}

func hostUUID(t *testing.T, c *libvirt.Connect) string {
	t.Helper()
	x, err := c.GetCapabilities()
	if err != nil {
		t.Fatalf("capabilities: %v", err)
	}
	var caps hostCaps
	if err := xml.Unmarshal([]byte(x), &caps); err != nil {
		t.Fatal(err)
	}
	return caps.Host.UUID
}

// The libvirt lab comes up with the domain running on the source only, two
// daemons that libvirt takes for two hosts, the guest reachable from the
// bridge; Down leaves no daemon, QEMU, namespace or directory behind.
func TestLibvirtUpDown(t *testing.T) {
	l := labtest.StartLibvirt(t, 256<<20, workload.Config{Name: workload.Idle})
	t.Logf("daemons ready in %s, capability probe %s, boot %s (%s, QEMU %s)", l.DaemonStart, l.CapsProbe, l.BootTime, l.Accel.Accel, l.QEMU.Version)
	src, dst := connect(t, l.SrcURI), connect(t, l.DstURI)

	if got := domainNames(t, src); len(got) != 1 || !got[lab.LibvirtDomain] {
		t.Errorf("source domains %v, want only %s running", got, lab.LibvirtDomain)
	}
	if got := domainNames(t, dst); len(got) != 0 {
		t.Errorf("destination domains %v, want none", got)
	}
	su, du := hostUUID(t, src), hostUUID(t, dst)
	if su == "" || su == du {
		t.Errorf("host UUIDs %q and %q, want two different ones", su, du)
	}
	sh, err := src.GetHostname()
	if err != nil {
		t.Fatal(err)
	}
	dh, err := dst.GetHostname()
	if err != nil {
		t.Fatal(err)
	}
	if sh == dh {
		t.Errorf("both daemons are host %q", sh)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := l.Guest.Status(ctx)
	if err != nil || st.BootID == "" {
		t.Fatalf("guest status: %+v, %v", st, err)
	}

	pids := processesIn(t, l.Netns.Name)
	if len(pids) < 3 { // two daemons and the source QEMU
		t.Errorf("%d processes in the namespace, want at least 3", len(pids))
	}
	if err := l.Down(); err != nil {
		t.Fatal(err)
	}
	if err := l.Down(); err != nil {
		t.Fatalf("second Down: %v", err)
	}
	if netnsExists(t, l.Netns.Name) {
		t.Errorf("namespace %s left behind", l.Netns.Name)
	}
	for _, p := range pids {
		if alive(p) && !zombie(p) {
			t.Errorf("process %d of the lab still alive", p)
		}
	}
	if _, err := os.Stat(l.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("run directory %s left behind (%v)", l.Dir, err)
	}
}

func processesIn(t *testing.T, netns string) []int {
	t.Helper()
	var pids []int
	ents, _ := os.ReadDir("/proc")
	target, err := os.Stat("/run/netns/" + netns)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := os.Stat(filepath.Join("/proc", e.Name(), "ns", "net"))
		if err == nil && os.SameFile(st, target) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func zombie(pid int) bool {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return true
	}
	i := strings.LastIndexByte(string(b), ')')
	return i > 0 && i+2 < len(b) && b[i+2] == 'Z'
}

// relay accepts connections on listen and copies each, both ways, to a
// fresh connection to target, counting the bytes sent towards target.
type relay struct {
	ln     net.Listener
	target string
	bytes  atomic.Int64
	wg     sync.WaitGroup
	errMu  sync.Mutex
	err    error
}

func startRelay(t *testing.T, listen, target string) *relay {
	t.Helper()
	ln, err := net.Listen("unix", listen)
	if err != nil {
		t.Fatal(err)
	}
	r := &relay{ln: ln, target: target}
	r.wg.Add(1)
	go r.serve()
	t.Cleanup(r.close)
	return r
}

// serve runs until the listener is closed.
func (r *relay) serve() {
	defer r.wg.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			defer c.Close()
			d, err := net.Dial("unix", r.target)
			if err != nil {
				r.errMu.Lock()
				r.err = err
				r.errMu.Unlock()
				return
			}
			defer d.Close()
			done := make(chan struct{})
			go func() {
				io.Copy(c, d)
				c.(*net.UnixConn).CloseWrite()
				close(done)
			}()
			n, _ := io.Copy(d, c)
			r.bytes.Add(n)
			d.(*net.UnixConn).CloseWrite()
			<-done
		}()
	}
}

func (r *relay) close() {
	r.ln.Close()
	r.wg.Wait()
}

// The lab can migrate: libvirt moves the domain from the source daemon to
// the destination over libvirt's unix:// transport, and the stream passes
// through this process on its way from MigDir in one namespace to MigDir in
// the other.
func TestLibvirtMigrateByHand(t *testing.T) {
	l := labtest.StartLibvirt(t, 256<<20, workload.Config{Name: workload.Idle})
	src, dst := connect(t, l.SrcURI), connect(t, l.DstURI)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	before, err := l.Guest.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}

	r := startRelay(t, filepath.Join(l.SrcMigDir, "t.sock"), filepath.Join(l.DstMigDir, "t.sock"))
	dom, err := src.LookupDomainByName(l.Domain)
	if err != nil {
		t.Fatal(err)
	}
	defer dom.Free()
	start := time.Now()
	moved, err := dom.Migrate3(dst, &libvirt.DomainMigrateParameters{URISet: true, URI: "unix://" + l.MigDir + "/t.sock"},
		libvirt.MIGRATE_LIVE|libvirt.MIGRATE_PERSIST_DEST|libvirt.MIGRATE_UNDEFINE_SOURCE)
	if err != nil {
		t.Fatalf("migrate: %v", err)
	}
	moved.Free()
	r.close()
	t.Logf("migrated in %s, %d bytes through the relay", time.Since(start), r.bytes.Load())
	if r.err != nil {
		t.Errorf("relay: %v", r.err)
	}
	if r.bytes.Load() < 1<<20 {
		t.Errorf("%d bytes through the relay, want the migration stream", r.bytes.Load())
	}
	if got := domainNames(t, dst); len(got) != 1 || !got[l.Domain] {
		t.Errorf("destination domains %v, want %s running", got, l.Domain)
	}
	if got := domainNames(t, src); len(got) != 0 {
		t.Errorf("source domains %v, want none", got)
	}
	after, err := l.Guest.Status(ctx)
	if err != nil {
		t.Fatalf("guest after migration: %v", err)
	}
	if after.BootID != before.BootID {
		t.Errorf("boot id %s after migration, %s before: the guest rebooted", after.BootID, before.BootID)
	}
}

// A killed daemon leaves its QEMU running, as a crash of libvirtd does on a
// real host, and Down still removes that QEMU.
func TestLibvirtKillDaemon(t *testing.T) {
	l := labtest.StartLibvirt(t, 256<<20, workload.Config{Name: workload.Idle})
	if err := l.KillDaemon("nowhere"); err == nil {
		t.Error("KillDaemon accepted an unknown side")
	}
	if err := l.KillDaemon(lab.SideSrc); err != nil {
		t.Fatal(err)
	}
	if c, err := libvirt.NewConnect(l.SrcURI); err == nil {
		c.Close()
		t.Fatal("the killed source daemon still answers")
	}
	connect(t, l.DstURI)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := l.Guest.Status(ctx); err != nil {
		t.Fatalf("guest after the daemon was killed: %v", err)
	}
	pids := processesIn(t, l.Netns.Name)
	if err := l.Down(); err != nil {
		t.Fatal(err)
	}
	for _, p := range pids {
		if alive(p) && !zombie(p) {
			t.Errorf("process %d of the lab still alive", p)
		}
	}
}

// A libvirt lab that fails to come up removes what it had created.
func TestLibvirtFailedUpCleansUp(t *testing.T) {
	cfg := labtest.Config(t, 256<<20, workload.Config{Name: workload.Idle})
	if _, err := os.Stat(lab.LibvirtdBin); err != nil {
		labtest.Unavailable(t, lab.LibvirtdBin+" not installed")
	}
	cfg.BootTimeout = time.Millisecond
	l, err := lab.UpLibvirt(context.Background(), cfg)
	if err == nil {
		l.Down()
		t.Fatal("UpLibvirt succeeded with a 1 ms boot timeout")
	}
	if !strings.Contains(err.Error(), "boot") {
		t.Errorf("error %q does not say the boot failed", err)
	}
	out, _ := exec.Command("ip", "netns", "list").Output()
	if mine := "vmigrate-" + strconv.Itoa(os.Getpid()) + "-"; strings.Contains(string(out), mine) {
		t.Errorf("namespace %s* left behind: %s", mine, out)
	}
	if out, _ := exec.Command("pgrep", "-P", strconv.Itoa(os.Getpid())).Output(); len(out) > 0 {
		t.Errorf("child processes still running: pids %s", out)
	}
}
