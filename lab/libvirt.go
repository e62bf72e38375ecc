package lab

// The libvirt lab: the same guest, bridge and namespace as the QMP lab,
// but run by two libvirt daemons, a source and a destination, as if they
// were two hosts. The flow:
//
//	UpLibvirt: stale labs removed -> accelerator and QEMU chosen ->
//	      namespace with bridge br0 -> two libvirtds, each in the lab's
//	      network namespace and in mount and UTS namespaces of its own
//	      (own /etc/libvirt, /run/libvirt, /var/lib/libvirt, ... bound
//	      over the system's, own host UUID and hostname) -> both sockets
//	      answer -> both daemons probe the QEMU's capabilities -> the
//	      domain is defined and started on the source, with its NIC on
//	      br0 -> the agent answers HTTP on the bridge.
//	Down: domains destroyed and undefined where a daemon still answers,
//	      daemons killed, every process left in the namespace (the
//	      daemonized QEMUs) killed, namespace and run directory removed.

import (
	"context"
	"crypto/rand"
	"encoding/xml"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"libvirt.org/go/libvirt"

	"github.com/vmigrate/vmigrate/guest"
	"github.com/vmigrate/vmigrate/guest/agentapi"
)

// LibvirtDomain is the name of the lab's domain on either daemon.
const LibvirtDomain = "vmigrate-guest"

// libvirtSerial is the file the guest console goes to, as each daemon
// sees it. /var/log/libvirt is bound per daemon, so the source's and the
// destination's QEMU each write their own file in the run directory.
const libvirtSerial = "/var/log/libvirt/" + LibvirtDomain + ".serial"

// Sides of the libvirt lab.
const (
	SideSrc = "src"
	SideDst = "dst"
)

// DomainSpec describes the lab's domain. It is the same on source and
// destination: paths in it are resolved in each daemon's own namespace.
type DomainSpec struct {
	Name     string
	Accel    string // AccelKVM (domain type kvm) or AccelTCG (type qemu)
	Emulator string // absolute path of the QEMU binary
	Machine  string // default q35
	MemBytes int64
	CPUs     int
	Kernel   string
	Initrd   string
	Cmdline  string // kernel command line
	Bridge   string // the NIC's bridge; empty for no NIC
	MAC      string
	Serial   string // file the console is appended to
	// Disk is a raw image (as the daemon sees its path) attached as vda
	// on virtio; empty for none.
	Disk string
}

// The domain XML, only as much of libvirt's schema as the lab uses.
type (
	domainXML struct {
		XMLName    xml.Name    `xml:"domain"`
		Type       string      `xml:"type,attr"`
		Name       string      `xml:"name"`
		Memory     memoryXML   `xml:"memory"`
		VCPU       int         `xml:"vcpu"`
		OS         osXML       `xml:"os"`
		Features   featuresXML `xml:"features"`
		Clock      clockXML    `xml:"clock"`
		OnPoweroff string      `xml:"on_poweroff"`
		OnReboot   string      `xml:"on_reboot"`
		OnCrash    string      `xml:"on_crash"`
		Devices    devicesXML  `xml:"devices"`
	}
	memoryXML struct {
		Unit  string `xml:"unit,attr"`
		Value int64  `xml:",chardata"`
	}
	osXML struct {
		Type    osTypeXML `xml:"type"`
		Kernel  string    `xml:"kernel"`
		Initrd  string    `xml:"initrd"`
		Cmdline string    `xml:"cmdline"`
	}
	osTypeXML struct {
		Arch    string `xml:"arch,attr"`
		Machine string `xml:"machine,attr"`
		Value   string `xml:",chardata"`
	}
	featuresXML struct {
		// libvirt 9.0 passes -no-acpi to a domain without ACPI, which
		// QEMU 10 rejects for q35.
		ACPI *struct{} `xml:"acpi"`
	}
	clockXML struct {
		Offset string `xml:"offset,attr"`
	}
	devicesXML struct {
		Emulator    string          `xml:"emulator"`
		Controllers []controllerXML `xml:"controller"`
		Disks       []diskXML       `xml:"disk"`
		Interfaces  []interfaceXML  `xml:"interface"`
		Serials     []serialXML     `xml:"serial"`
		Memballoon  modelXML        `xml:"memballoon"`
	}
	diskXML struct {
		Type   string        `xml:"type,attr"`
		Device string        `xml:"device,attr"`
		Driver diskDriverXML `xml:"driver"`
		Source diskFileXML   `xml:"source"`
		Target diskTargetXML `xml:"target"`
	}
	diskDriverXML struct {
		Name string `xml:"name,attr"`
		Type string `xml:"type,attr"`
	}
	diskFileXML struct {
		File string `xml:"file,attr"`
	}
	diskTargetXML struct {
		Dev string `xml:"dev,attr"`
		Bus string `xml:"bus,attr"`
	}
	controllerXML struct {
		Type  string `xml:"type,attr"`
		Model string `xml:"model,attr"`
	}
	interfaceXML struct {
		Type   string    `xml:"type,attr"`
		Source bridgeXML `xml:"source"`
		MAC    *macXML   `xml:"mac"`
		Model  typeXML   `xml:"model"`
	}
	bridgeXML struct {
		Bridge string `xml:"bridge,attr"`
	}
	macXML struct {
		Address string `xml:"address,attr"`
	}
	typeXML struct {
		Type string `xml:"type,attr"`
	}
	modelXML struct {
		Model string `xml:"model,attr"`
	}
	serialXML struct {
		Type   string        `xml:"type,attr"`
		Source fileSourceXML `xml:"source"`
		Target portXML       `xml:"target"`
	}
	fileSourceXML struct {
		Path   string `xml:"path,attr"`
		Append string `xml:"append,attr"`
	}
	portXML struct {
		Port int `xml:"port,attr"`
	}
)

// XML returns the domain definition. It is a pure function of the spec so
// that it can be table-tested and printed for reproduction. The domain
// mirrors the QMP lab's QEMU: direct kernel boot, one virtio NIC, the
// console to a file, no USB, balloon or display, and no reboot.
func (s DomainSpec) XML() (string, error) {
	var typ string
	switch s.Accel {
	case AccelKVM:
		typ = "kvm"
	case AccelTCG:
		typ = "qemu"
	default:
		return "", fmt.Errorf("domain xml: accelerator %q is neither kvm nor tcg", s.Accel)
	}
	if s.Name == "" {
		return "", fmt.Errorf("domain xml: name is required")
	}
	if s.MemBytes < 64<<20 || s.MemBytes%(1<<20) != 0 {
		return "", fmt.Errorf("domain xml: memory %d bytes must be a whole number of MiB, at least 64 MiB", s.MemBytes)
	}
	if s.Kernel == "" || s.Initrd == "" {
		return "", fmt.Errorf("domain xml: kernel and initrd are required")
	}
	if !filepath.IsAbs(s.Emulator) {
		return "", fmt.Errorf("domain xml: emulator %q is not an absolute path", s.Emulator)
	}
	if s.Serial == "" {
		return "", fmt.Errorf("domain xml: serial log path is required")
	}
	machine := s.Machine
	if machine == "" {
		machine = "q35"
	}
	cpus := s.CPUs
	if cpus <= 0 {
		cpus = 1
	}
	d := domainXML{
		Type:   typ,
		Name:   s.Name,
		Memory: memoryXML{Unit: "KiB", Value: s.MemBytes >> 10},
		VCPU:   cpus,
		OS: osXML{
			Type:   osTypeXML{Arch: "x86_64", Machine: machine, Value: "hvm"},
			Kernel: s.Kernel, Initrd: s.Initrd, Cmdline: s.Cmdline,
		},
		Features:   featuresXML{ACPI: &struct{}{}},
		Clock:      clockXML{Offset: "utc"},
		OnPoweroff: "destroy", OnReboot: "destroy", OnCrash: "destroy",
		Devices: devicesXML{
			Emulator:    s.Emulator,
			Controllers: []controllerXML{{Type: "usb", Model: "none"}},
			Serials: []serialXML{{Type: "file",
				Source: fileSourceXML{Path: s.Serial, Append: "on"}, Target: portXML{Port: 0}}},
			Memballoon: modelXML{Model: "none"},
		},
	}
	if s.Disk != "" {
		if !filepath.IsAbs(s.Disk) {
			return "", fmt.Errorf("domain xml: disk %q is not an absolute path", s.Disk)
		}
		d.Devices.Disks = []diskXML{{Type: "file", Device: "disk", Driver: diskDriverXML{Name: "qemu", Type: "raw"},
			Source: diskFileXML{File: s.Disk}, Target: diskTargetXML{Dev: DiskNode, Bus: "virtio"}}}
	}
	if s.Bridge != "" {
		nic := interfaceXML{Type: "bridge", Source: bridgeXML{Bridge: s.Bridge}, Model: typeXML{Type: "virtio"}}
		if s.MAC != "" {
			nic.MAC = &macXML{Address: s.MAC}
		}
		d.Devices.Interfaces = []interfaceXML{nic}
	}
	b, err := xml.MarshalIndent(d, "", "  ")
	if err != nil {
		return "", fmt.Errorf("domain xml: %w", err)
	}
	return string(b) + "\n", nil
}

// LibvirtDisk is the guest's disk image in each daemon's namespace (a lab
// with Config.DiskBytes).
const LibvirtDisk = "/var/lib/libvirt/images/vmigrate-guest.img"

// LibvirtLab is a source and a destination libvirt daemon on one machine,
// with the lab guest running as a domain on the source.
type LibvirtLab struct {
	Dir            string // run directory (removed by Down)
	Netns          *Netns
	Accel          AccelChoice
	QEMU           QEMUChoice
	GuestIP        string
	Guest          *guest.Client // the agent, reached from the bridge
	Domain         string        // domain name, LibvirtDomain
	SrcURI, DstURI string        // libvirt connection URIs

	// MigDir is the same path inside both daemons' mount namespaces,
	// backed by SrcMigDir for the source's and DstMigDir for the
	// destination's: a source QEMU connecting to MigDir/x.sock reaches
	// SrcMigDir/x.sock; a destination QEMU listening on MigDir/x.sock
	// creates DstMigDir/x.sock.
	MigDir               string
	SrcMigDir, DstMigDir string // the backing directories, as this process sees them

	DomainXML   string        // the XML the domain was defined with
	DaemonStart time.Duration // from starting both daemons to both sockets answering
	CapsProbe   time.Duration // both daemons' first capability probe of the QEMU
	BootTime    time.Duration // from starting the domain to the agent answering

	daemons  map[string]*libvirtd
	log      *zap.Logger
	downOnce sync.Once
	downErr  error
}

// UpLibvirt starts the libvirt lab with the same configuration as Up. On
// error everything it created is removed again.
func UpLibvirt(ctx context.Context, cfg Config) (l *LibvirtLab, err error) {
	if os.Geteuid() == 0 { // a non-root caller hears ErrNotRoot from prepare first
		if _, err := os.Stat(LibvirtdBin); err != nil {
			return nil, fmt.Errorf("%s not found: install libvirt (apt-get install libvirt-daemon-system)", LibvirtdBin)
		}
	}
	accel, qemu, err := prepare(ctx, &cfg, "unshare", "mount")
	if err != nil {
		return nil, err
	}
	if removed := removeStaleRunDirs(); len(removed) > 0 {
		cfg.Log.Info("removed run directories of earlier libvirt labs", zap.Strings("dirs", removed))
	}
	emulator, err := exec.LookPath(qemu.Binary)
	if err == nil {
		emulator, err = filepath.Abs(emulator)
	}
	if err != nil {
		return nil, fmt.Errorf("libvirt lab: emulator: %w", err)
	}

	dir, err := os.MkdirTemp("", "vml")
	if err != nil {
		return nil, fmt.Errorf("libvirt lab: %w", err)
	}
	l = &LibvirtLab{
		Dir: dir, Accel: accel, QEMU: qemu, GuestIP: GuestIP, Domain: LibvirtDomain,
		MigDir: LibvirtMigDir, SrcMigDir: filepath.Join(dir, SideSrc, "mig"), DstMigDir: filepath.Join(dir, SideDst, "mig"),
		daemons: map[string]*libvirtd{}, log: cfg.Log,
	}
	defer func() {
		if err != nil {
			l.Down()
			l = nil
		}
	}()
	if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return l, fmt.Errorf("libvirt lab: %w", err)
	}

	name := nsPrefix + strconv.Itoa(os.Getpid()) + "-" + filepath.Base(dir)[3:]
	if l.Netns, err = createNetns(ctx, name, BridgeCIDR); err != nil {
		return l, err
	}

	modDir := qemuModDir(emulator)
	start := time.Now()
	for i, side := range []string{SideSrc, SideDst} {
		uuid, err := randomUUID()
		if err != nil {
			return l, fmt.Errorf("libvirt lab: %w", err)
		}
		spec := daemonSpec{
			Side: side, Root: filepath.Join(dir, side), HostUUID: uuid, Hostname: "vmigrate-" + side,
			PortMin: 49152 + 50*i, PortMax: 49152 + 50*i + 19, QEMUModDir: modDir,
		}
		d, err := startLibvirtd(spec, l.Netns)
		if err != nil {
			return l, err
		}
		l.daemons[side] = d
	}
	l.SrcURI, l.DstURI = l.daemons[SideSrc].spec.uri(), l.daemons[SideDst].spec.uri()
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for _, side := range []string{SideSrc, SideDst} {
		if err := l.daemons[side].waitReady(rctx); err != nil {
			return l, fmt.Errorf("libvirt lab: %w", err)
		}
	}
	dst, err := l.connectReady(rctx, SideDst)
	if err != nil {
		return l, err
	}
	dst.Close()
	src, err := l.connectReady(rctx, SideSrc)
	if err != nil {
		return l, err
	}
	defer src.Close()
	l.DaemonStart = time.Since(start)

	// Both daemons probe the QEMU now, in parallel, so that neither the
	// boot nor a later migration pays for it.
	start = time.Now()
	machine := cfg.Machine
	if machine == "" {
		machine = "q35"
	}
	virtType := map[string]string{AccelKVM: "kvm", AccelTCG: "qemu"}[accel.Accel]
	probeErrs := make([]error, 2)
	var wg sync.WaitGroup
	for i, side := range []string{SideSrc, SideDst} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			probeErrs[i] = l.probeCaps(side, emulator, machine, virtType)
		}()
	}
	wg.Wait()
	if err := errors.Join(probeErrs...); err != nil {
		return l, err
	}
	l.CapsProbe = time.Since(start)

	spec := DomainSpec{
		Name: LibvirtDomain, Accel: accel.Accel, Emulator: emulator, Machine: cfg.Machine,
		MemBytes: cfg.MemBytes, CPUs: cfg.CPUs, Kernel: cfg.Image.Kernel, Initrd: cfg.Image.Initrd,
		Cmdline: guest.KernelArgs(GuestIP, guestPfx, cfg.Workload),
		Bridge:  l.Netns.Bridge, MAC: GuestMAC, Serial: libvirtSerial,
	}
	if cfg.DiskBytes > 0 {
		// The same path in each daemon's /var/lib/libvirt, each its own
		// image: the destination's is the empty target of the copy.
		spec.Disk = LibvirtDisk
		for _, side := range []string{SideSrc, SideDst} {
			p := filepath.Join(l.Dir, side, "lib", "images", filepath.Base(LibvirtDisk))
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return l, fmt.Errorf("libvirt lab: %w", err)
			}
			f, err := os.Create(p)
			if err == nil {
				err = f.Truncate(cfg.DiskBytes)
				f.Close()
			}
			if err != nil {
				return l, fmt.Errorf("libvirt lab: disk image: %w", err)
			}
		}
	}
	if l.DomainXML, err = spec.XML(); err != nil {
		return l, err
	}
	start = time.Now()
	dom, err := src.DomainDefineXML(l.DomainXML)
	if err != nil {
		return l, fmt.Errorf("libvirt lab: define domain on src: %w; %s", err, l.DaemonLog(SideSrc))
	}
	defer dom.Free()
	if err := dom.Create(); err != nil {
		return l, fmt.Errorf("libvirt lab: start domain on src: %w; qemu log: %s", err, Tail(l.QEMULog(SideSrc), 1500))
	}

	bctx, cancel := context.WithTimeout(ctx, cfg.BootTimeout)
	defer cancel()
	if err := l.waitReadyLine(bctx, dom); err != nil {
		return l, fmt.Errorf("libvirt lab: boot: %w", err)
	}
	l.Guest = &guest.Client{HTTP: l.HTTPClient(), Addr: GuestIP}
	if err := waitGuestAgent(bctx, l.Guest); err != nil {
		return l, fmt.Errorf("libvirt lab: boot: %w", err)
	}
	l.BootTime = time.Since(start)
	cfg.Log.Info("libvirt lab up", zap.String("accel", accel.Accel), zap.String("qemu", qemu.Version),
		zap.String("guest", GuestIP), zap.String("src", l.SrcURI), zap.String("dst", l.DstURI),
		zap.Duration("daemons", l.DaemonStart), zap.Duration("caps_probe", l.CapsProbe), zap.Duration("boot", l.BootTime))
	return l, nil
}

// qemuModDir returns the module directory of a QEMU unpacked outside the
// system's prefix (…/root/usr/bin/qemu → …/root/usr/lib/x86_64-linux-gnu/
// qemu), or "" for the system's own QEMU or one without modules.
func qemuModDir(emulator string) string {
	prefix := filepath.Dir(filepath.Dir(emulator))
	if prefix == "/usr" || prefix == "/usr/local" {
		return ""
	}
	d := filepath.Join(prefix, "lib", "x86_64-linux-gnu", "qemu")
	if st, err := os.Stat(d); err != nil || !st.IsDir() {
		return ""
	}
	return d
}

func randomUUID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16]), nil
}

// probeCaps makes a daemon probe the emulator's capabilities.
func (l *LibvirtLab) probeCaps(side, emulator, machine, virtType string) error {
	c, err := l.Connect(side)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.GetDomainCapabilities(emulator, "x86_64", machine, virtType, 0); err != nil {
		return fmt.Errorf("libvirt lab: %s capabilities of %s: %w; %s", side, emulator, err, l.DaemonLog(side))
	}
	return nil
}

// Connect opens a connection to the "src" or "dst" daemon. The caller
// closes it.
func (l *LibvirtLab) Connect(side string) (*libvirt.Connect, error) {
	d, err := l.daemon(side)
	if err != nil {
		return nil, err
	}
	c, err := libvirt.NewConnect(d.spec.uri())
	if err != nil {
		return nil, fmt.Errorf("libvirt lab: connect to %s: %w", side, err)
	}
	return c, nil
}

// connectReady connects to a daemon that has just created its socket,
// retrying while it may not listen yet.
func (l *LibvirtLab) connectReady(ctx context.Context, side string) (*libvirt.Connect, error) {
	for {
		c, err := l.Connect(side)
		if err == nil {
			return c, nil
		}
		select {
		case <-l.daemons[side].done:
			return nil, fmt.Errorf("%w; %s", err, l.DaemonLog(side))
		case <-ctx.Done():
			return nil, fmt.Errorf("%w; %s", err, l.DaemonLog(side))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (l *LibvirtLab) daemon(side string) (*libvirtd, error) {
	d := l.daemons[side]
	if d == nil {
		return nil, fmt.Errorf("libvirt lab: no daemon %q (want %q or %q)", side, SideSrc, SideDst)
	}
	return d, nil
}

// waitReadyLine waits until the source's console shows the agent's ready
// line, failing early if the domain stops.
func (l *LibvirtLab) waitReadyLine(ctx context.Context, dom *libvirt.Domain) error {
	serial := l.SerialLog(SideSrc)
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for i := 0; ; i++ {
		if _, ok := findLine(serial, agentapi.ReadyPrefix); ok {
			return nil
		}
		if i%20 == 0 {
			if st, _, err := dom.GetState(); err != nil || st != libvirt.DOMAIN_RUNNING {
				return fmt.Errorf("domain not running (state %d, %v); qemu log: %s; console tail: %s",
					st, err, Tail(l.QEMULog(SideSrc), 1000), Tail(serial, 600))
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("guest on src did not print %q: %w; console tail: %s", agentapi.ReadyPrefix, ctx.Err(), Tail(serial, 600))
		case <-t.C:
		}
	}
}

// SerialLog is the file the guest console of side's QEMU goes to.
func (l *LibvirtLab) SerialLog(side string) string {
	return filepath.Join(l.Dir, side, "log", filepath.Base(libvirtSerial))
}

// QEMULog is the file libvirt sends side's QEMU's stderr to, after its
// command line.
func (l *LibvirtLab) QEMULog(side string) string {
	return filepath.Join(l.Dir, side, "log", "qemu", LibvirtDomain+".log")
}

// DaemonLog returns the tail of side's daemon log and stderr, for failure
// messages.
func (l *LibvirtLab) DaemonLog(side string) string {
	d, err := l.daemon(side)
	if err != nil {
		return err.Error()
	}
	return d.log()
}

// KillDaemon kills side's libvirtd with SIGKILL, as a crash would. The
// QEMUs it started keep running.
func (l *LibvirtLab) KillDaemon(side string) error {
	d, err := l.daemon(side)
	if err != nil {
		return err
	}
	d.kill()
	return nil
}

// RestartDaemon starts side's libvirtd again after KillDaemon, with the
// state it had: it reconnects to the QEMUs it left running and settles
// the jobs they were in (an incoming migration that never finished is
// killed).
func (l *LibvirtLab) RestartDaemon(ctx context.Context, side string) error {
	d, err := l.daemon(side)
	if err != nil {
		return err
	}
	if d.alive() {
		return fmt.Errorf("libvirtd %s still runs", side)
	}
	// The dead daemon's socket file stays: gone, it shows when the new
	// one listens.
	os.Remove(d.spec.socket())
	nd, err := launchLibvirtd(d.spec, l.Netns)
	if err != nil {
		return err
	}
	l.daemons[side] = nd
	return nd.waitReady(ctx)
}

// HTTPClient returns a client whose connections start on the bridge.
func (l *LibvirtLab) HTTPClient() *http.Client { return l.Netns.HTTPClient() }

// ProbeClient is Netns.ProbeClient: one kept-alive connection to the guest.
func (l *LibvirtLab) ProbeClient() *http.Client { return l.Netns.ProbeClient() }

// Dial opens a TCP connection to addr from the bridge.
func (l *LibvirtLab) Dial(ctx context.Context, addr string) (net.Conn, error) {
	return l.Netns.DialContext(ctx, "tcp", addr)
}

// Down removes the domains, the daemons and every QEMU they started, the
// namespace and the run directory. It may be called more than once.
func (l *LibvirtLab) Down() error {
	l.downOnce.Do(func() {
		var errs []error
		for _, side := range []string{SideSrc, SideDst} {
			if d := l.daemons[side]; d != nil && d.alive() {
				if err := removeDomains(d.spec.uri(), 15*time.Second); err != nil {
					l.log.Warn("libvirt lab: remove domains", zap.String("side", side), zap.Error(err))
				}
			}
		}
		var pids []int
		for _, side := range []string{SideSrc, SideDst} {
			if d := l.daemons[side]; d != nil {
				d.kill()
				pids = append(pids, d.spec.qemuPids()...)
			}
		}
		if l.Netns != nil {
			pids = append(pids, netnsPids(context.Background(), l.Netns.Name)...)
		}
		if err := killAndReap(pids, 10*time.Second); err != nil {
			errs = append(errs, fmt.Errorf("libvirt lab down: %w", err))
		}
		if l.Netns != nil {
			if err := l.Netns.Delete(); err != nil {
				errs = append(errs, err)
			}
		}
		if err := os.RemoveAll(l.Dir); err != nil {
			errs = append(errs, err)
		}
		l.downErr = errors.Join(errs...)
		l.log.Info("libvirt lab down", zap.String("netns", nsName(l.Netns)))
	})
	return l.downErr
}

// removeDomains destroys and undefines every domain of the daemon at uri.
// A daemon that hangs is given up on after timeout; it is killed next,
// which ends the call.
func removeDomains(uri string, timeout time.Duration) error {
	done := make(chan error, 1)
	go func() {
		c, err := libvirt.NewConnect(uri)
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		doms, err := c.ListAllDomains(0)
		if err != nil {
			done <- err
			return
		}
		var errs []error
		for _, d := range doms {
			if active, _ := d.IsActive(); active {
				if err := d.Destroy(); err != nil {
					errs = append(errs, err)
				}
			}
			if persistent, _ := d.IsPersistent(); persistent {
				if err := d.Undefine(); err != nil {
					errs = append(errs, err)
				}
			}
			d.Free()
		}
		done <- errors.Join(errs...)
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(timeout):
		return fmt.Errorf("%s: no answer after %s", strings.TrimPrefix(uri, "qemu+unix://"), timeout)
	}
}
