package lab

import (
	"fmt"
	"strconv"
	"strings"
)

// Accelerator names as QEMU spells them in -accel.
const (
	AccelKVM = "kvm"
	AccelTCG = "tcg"
)

// Disk image formats a VMSpec accepts.
const (
	DiskRaw   = "raw"
	DiskQCOW2 = "qcow2"
)

// Names of the guest disk in QEMU, stable so that the migration code can
// address it: the format node (what drive-mirror copies from), its file node,
// and the device, which must have the same id on both sides.
const (
	DiskNode     = "vda"
	DiskFileNode = "vda-file"
	DiskDevice   = "vda-dev"
)

// VMSpec describes one QEMU process of the lab. Source and destination are
// built from the same spec and differ only in Name, Tap, QMP, Serial, Disk
// and Incoming, so the destination accepts the source's device state.
type VMSpec struct {
	Binary   string // qemu-system-x86_64
	Name     string // "src" or "dst"; shown in ps and in QEMU's errors
	Machine  string // machine type; an alias resolves identically on one binary
	Accel    string // AccelKVM or AccelTCG
	MemBytes int64
	CPUs     int
	Kernel   string
	Initrd   string
	Append   string // kernel command line
	QMP      string // unix socket path QEMU listens on
	Serial   string // file the guest console is written to
	Tap      string // tap interface inside the lab's namespace; empty for no NIC
	MAC      string // the guest NIC's MAC; the same on both sides
	UserNet  bool   // slirp NIC instead of a tap (the accelerator probe)
	Incoming bool   // start with -incoming defer
	// Disk is an image attached as virtio-blk device DiskDevice over the
	// block nodes DiskFileNode and DiskNode; empty for no disk.
	Disk       string
	DiskFormat string // DiskRaw (default) or DiskQCOW2
}

// Args returns QEMU's argument list (without the binary). It is a pure
// function of the spec so that the command line can be table-tested and
// printed for reproduction.
func (s VMSpec) Args() ([]string, error) {
	if s.Accel != AccelKVM && s.Accel != AccelTCG {
		return nil, fmt.Errorf("qemu args: accelerator %q is neither kvm nor tcg", s.Accel)
	}
	if s.MemBytes < 64<<20 || s.MemBytes%(1<<20) != 0 {
		return nil, fmt.Errorf("qemu args: memory %d bytes must be a whole number of MiB, at least 64 MiB", s.MemBytes)
	}
	if s.Kernel == "" || s.Initrd == "" {
		return nil, fmt.Errorf("qemu args: kernel and initrd are required")
	}
	if s.QMP == "" || s.Serial == "" {
		return nil, fmt.Errorf("qemu args: QMP socket and serial log paths are required")
	}
	if s.Tap != "" && s.UserNet {
		return nil, fmt.Errorf("qemu args: a tap and user networking exclude each other")
	}
	format := s.DiskFormat
	if format == "" {
		format = DiskRaw
	}
	if format != DiskRaw && format != DiskQCOW2 {
		return nil, fmt.Errorf("qemu args: disk format %q is neither raw nor qcow2", s.DiskFormat)
	}
	machine := s.Machine
	if machine == "" {
		machine = "q35"
	}
	cpus := s.CPUs
	if cpus <= 0 {
		cpus = 1
	}
	args := []string{
		"-name", "vmigrate-" + s.Name,
		"-machine", machine,
		"-accel", s.Accel,
		"-m", strconv.FormatInt(s.MemBytes>>20, 10) + "M",
		"-smp", strconv.Itoa(cpus),
		"-nodefaults", "-no-user-config",
		"-display", "none",
		"-no-reboot",
		"-kernel", s.Kernel,
		"-initrd", s.Initrd,
		"-append", s.Append,
		"-serial", "file:" + s.Serial,
		"-qmp", "unix:" + s.QMP + ",server=on,wait=off",
	}
	switch {
	case s.Tap != "":
		args = append(args,
			"-netdev", "tap,id=n0,ifname="+s.Tap+",script=no,downscript=no",
			"-device", nicDevice(s.MAC))
	case s.UserNet:
		args = append(args,
			"-netdev", "user,id=n0,restrict=on",
			"-device", nicDevice(s.MAC))
	}
	if s.Disk != "" {
		args = append(args,
			"-blockdev", "driver=file,filename="+optionValue(s.Disk)+",node-name="+DiskFileNode+",cache.direct=off",
			"-blockdev", "driver="+format+",file="+DiskFileNode+",node-name="+DiskNode,
			"-device", "virtio-blk-pci,drive="+DiskNode+",id="+DiskDevice)
	}
	if s.Incoming {
		args = append(args, "-incoming", "defer")
	}
	return args, nil
}

// optionValue escapes a value for QEMU's key=value,... option syntax, where
// a comma is written twice.
func optionValue(v string) string { return strings.ReplaceAll(v, ",", ",,") }

func nicDevice(mac string) string {
	d := "virtio-net-pci,netdev=n0"
	if mac != "" {
		d += ",mac=" + mac
	}
	return d
}
