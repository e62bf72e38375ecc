package lab

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
)

// SystemQEMU is the QEMU binary on the PATH.
const SystemQEMU = "qemu-system-x86_64"

// TCGSafeMajor is the first QEMU release whose TCG dirty tracking keeps
// up with live migration. Before 9.0, syncing the migration dirty bitmap
// did not reset the TCG TLB, so guest stores made through a stale TLB
// entry after a sync were never marked dirty and never resent: the
// destination got stale memory (we see its kernel oops under memdirty).
const TCGSafeMajor = 9

var versionRE = regexp.MustCompile(`version (\d+)\.(\d+)\.(\d+)`)

// QEMUVersion asks a QEMU binary for its version.
func QEMUVersion(ctx context.Context, bin string) (major, minor int, full string, err error) {
	out, err := exec.CommandContext(ctx, bin, "--version").Output()
	if err != nil {
		return 0, 0, "", fmt.Errorf("%s --version: %w", bin, err)
	}
	m := versionRE.FindStringSubmatch(string(out))
	if m == nil {
		return 0, 0, "", fmt.Errorf("%s --version: no version in %q", bin, out)
	}
	major, _ = strconv.Atoi(m[1])
	minor, _ = strconv.Atoi(m[2])
	return major, minor, m[1] + "." + m[2] + "." + m[3], nil
}

// UnpackedQEMU10 is where scripts/qemu10.sh (run by make deps) unpacks
// QEMU 10.0 from bookworm-backports, beside the system's QEMU.
func UnpackedQEMU10(cacheDir string) string {
	return filepath.Join(cacheDir, "qemu10", "root", "usr", "bin", SystemQEMU)
}

// QEMUChoice is the binary the lab runs and why.
type QEMUChoice struct {
	Binary  string `json:"binary"`
	Version string `json:"version"`
	Reason  string `json:"reason"`
}

// ChooseQEMU picks the QEMU binary. A binary the user names is used as
// given. Otherwise the system's, except for a TCG lab when the system's is
// older than 9.0 and QEMU 10.0 is unpacked in the cache: a TCG migration
// on the old one would corrupt a busy guest.
func ChooseQEMU(ctx context.Context, want, accel, cacheDir string) (QEMUChoice, error) {
	if want != "" {
		if _, err := exec.LookPath(want); err != nil {
			return QEMUChoice{}, fmt.Errorf("%s not found: install QEMU (apt-get install qemu-system-x86, or make deps)", want)
		}
		_, _, v, err := QEMUVersion(ctx, want)
		if err != nil {
			return QEMUChoice{}, err
		}
		return QEMUChoice{Binary: want, Version: v, Reason: "requested"}, nil
	}
	if _, err := exec.LookPath(SystemQEMU); err != nil {
		return QEMUChoice{}, fmt.Errorf("%s not found: install QEMU (apt-get install qemu-system-x86, or make deps)", SystemQEMU)
	}
	major, _, v, err := QEMUVersion(ctx, SystemQEMU)
	if err != nil {
		return QEMUChoice{}, err
	}
	sys := QEMUChoice{Binary: SystemQEMU, Version: v, Reason: "the system's"}
	if accel != AccelTCG || major >= TCGSafeMajor {
		return sys, nil
	}
	alt := UnpackedQEMU10(cacheDir)
	if _, err := os.Stat(alt); err != nil {
		sys.Reason = fmt.Sprintf("the system's; QEMU %s loses guest writes in TCG migrations and no QEMU 10.0 is unpacked in %s (make deps does it)", v, filepath.Dir(alt))
		return sys, nil
	}
	_, _, av, err := QEMUVersion(ctx, alt)
	if err != nil {
		return QEMUChoice{}, fmt.Errorf("unpacked QEMU 10.0: %w (rerun make deps)", err)
	}
	return QEMUChoice{Binary: alt, Version: av, Reason: fmt.Sprintf("system QEMU %s loses guest writes in TCG migrations (fixed in 9.0); using the unpacked %s", v, av)}, nil
}
