package lab

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/vmigrate/vmigrate/guest"
	"github.com/vmigrate/vmigrate/guest/agentapi"
	"github.com/vmigrate/vmigrate/guest/workload"
)

// ProbeTimeout bounds the KVM boot probe. A guest boots in about 2 s under
// TCG; under working KVM it is faster still, so a guest that has not
// reached its agent by then is taken to hang (nested virtualisation).
const ProbeTimeout = 20 * time.Second

// AccelChoice is the accelerator the lab uses and why.
type AccelChoice struct {
	Accel  string `json:"accel"`
	Reason string `json:"reason"`
	Probed bool   `json:"probed"` // a probe boot ran now, rather than a cached answer
}

// probeRecord is what the probe cache keeps.
type probeRecord struct {
	Key    string `json:"key"`
	Accel  string `json:"accel"`
	Reason string `json:"reason"`
}

// ChooseAccel picks the accelerator. "tcg" and "kvm" are taken as given.
// "auto" uses KVM only if the guest really boots under it: /dev/kvm can
// exist while Linux guests hang (nested virtualisation), so a probe boots
// the guest once under KVM and looks for its agent. The answer is cached
// per QEMU binary, host kernel and guest image.
func ChooseAccel(ctx context.Context, want, qemuBin string, img guest.Image, cacheDir string, log *zap.Logger) (AccelChoice, error) {
	switch want {
	case AccelTCG:
		return AccelChoice{Accel: AccelTCG, Reason: "requested"}, nil
	case AccelKVM:
		if err := unix.Access("/dev/kvm", unix.R_OK|unix.W_OK); err != nil {
			return AccelChoice{}, fmt.Errorf("accelerator kvm requested but /dev/kvm is not usable: %w", err)
		}
		return AccelChoice{Accel: AccelKVM, Reason: "requested"}, nil
	case "", "auto":
	default:
		return AccelChoice{}, fmt.Errorf("accelerator %q: want auto, kvm or tcg", want)
	}
	if err := unix.Access("/dev/kvm", unix.R_OK|unix.W_OK); err != nil {
		return AccelChoice{Accel: AccelTCG, Reason: "no usable /dev/kvm"}, nil
	}
	key, err := probeKey(qemuBin, img)
	if err != nil {
		return AccelChoice{}, err
	}
	cache := filepath.Join(cacheDir, "accel-probe.json")
	if b, err := os.ReadFile(cache); err == nil {
		var r probeRecord
		if json.Unmarshal(b, &r) == nil && r.Key == key && (r.Accel == AccelKVM || r.Accel == AccelTCG) {
			return AccelChoice{Accel: r.Accel, Reason: r.Reason + " (cached probe)"}, nil
		}
	}
	log.Info("probing whether the guest boots under KVM", zap.Duration("timeout", ProbeTimeout))
	c := AccelChoice{Accel: AccelKVM, Reason: "guest booted under KVM", Probed: true}
	if err := probeKVM(ctx, qemuBin, img); err != nil {
		if ctx.Err() != nil {
			return AccelChoice{}, ctx.Err()
		}
		c = AccelChoice{Accel: AccelTCG, Reason: "KVM present but the guest did not boot under it: " + err.Error(), Probed: true}
	}
	if b, err := json.Marshal(probeRecord{Key: key, Accel: c.Accel, Reason: c.Reason}); err == nil {
		os.MkdirAll(cacheDir, 0o755)
		os.WriteFile(cache, b, 0o644)
	}
	return c, nil
}

func probeKey(qemuBin string, img guest.Image) (string, error) {
	path, err := exec.LookPath(qemuBin)
	if err != nil {
		return "", err
	}
	st, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	var u unix.Utsname
	unix.Uname(&u)
	h := sha256.New()
	fmt.Fprintf(h, "%s|%d|%s|%s|%s|%s", path, st.Size(), st.ModTime(), unix.ByteSliceToString(u.Release[:]), unix.ByteSliceToString(u.Version[:]), img.Dir)
	return hex.EncodeToString(h.Sum(nil)[:12]), nil
}

// probeKVM boots the guest under KVM with no network of ours and waits for
// the agent's ready line on the console.
func probeKVM(ctx context.Context, qemuBin string, img guest.Image) error {
	dir, err := os.MkdirTemp("", "vmp")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	spec := VMSpec{
		Binary: qemuBin, Name: "kvm-probe", Accel: AccelKVM, MemBytes: 128 << 20,
		Kernel: img.Kernel, Initrd: img.Initrd,
		Append: guest.KernelArgs("10.0.2.15", 24, workload.Config{Name: workload.Idle}),
		QMP:    dir + "/q", Serial: dir + "/serial", UserNet: true,
	}
	vm, err := startVM(spec, dir, nil)
	if err != nil {
		return err
	}
	defer vm.Kill()
	pctx, cancel := context.WithTimeout(ctx, ProbeTimeout)
	defer cancel()
	if _, err := vm.waitSerial(pctx, agentapi.ReadyPrefix); err != nil {
		if pctx.Err() != nil && ctx.Err() == nil {
			return fmt.Errorf("no agent after %s", ProbeTimeout)
		}
		return shorten(err)
	}
	return nil
}

func shorten(err error) error {
	s := err.Error()
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return fmt.Errorf("%s", strings.TrimSpace(s))
}
