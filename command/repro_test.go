package command

import (
	"bufio"
	"encoding/json"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmigrate/vmigrate/lab/labtest"
	"github.com/vmigrate/vmigrate/scenarios"
)

func TestScenarioReproBadFlags(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the flags are checked after the root check")
	}
	out := filepath.Join(t.TempDir(), "never")
	for _, args := range [][]string{
		{"ufpe", "--sizes", "100M"},
		{"ufpe", "--sizes", ","},
		{"ufpe", "--configs", "qemu-default,vmigrate-best"},
		{"ufpe", "--rate", "-1"},
		{"ufpe", "--share", "2"},
		{"ufpe", "--timeout", "0s"},
		{"ufpe", "--before", "10ms"},
		{"ufpe", "--wss-percent", "90"},
		{"ufpe", "--dirty-rate", "-5"},
		{"ufpe", "--lab", "xen"},
		{"ufpe", "--repeat", "0"},
		{"ufpe", "--max-time", "1s"},
		{"ufpe", "--wan-bandwidth", "fast"},
		{"ufpe", "--accel", "hvf"},
		{"ufpe", "extra"},
		{"cloudnet", "--workloads", "tpcw,tpc-c"},
		{"cloudnet", "--modes", "default,fast"},
		{"cloudnet", "--optimised", "qemu-default"},
		{"cloudnet", "--optimised", "vmigrate-best"},
		{"cloudnet", "--mem", "10M"},
		{"cloudnet", "--request-rate", "-1"},
		{"cloudnet", "--wan-rtt", "soon"},
	} {
		code, stdout, stderr := vmigrate(t, append([]string{"scenario", args[0], "--out", out}, args[1:]...)...)
		if code != ExitUsage || stdout != "" || !strings.Contains(stderr, "vmigrate: ") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q", args, code, stdout, stderr)
		}
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("a refused run made --out: %v", err)
	}
}

// readJSONLines reads a runs file, one record a line.
func readJSONLines[T any](t *testing.T, path string) []T {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []T
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 64<<20)
	for sc.Scan() {
		var v T
		if err := json.Unmarshal(sc.Bytes(), &v); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		out = append(out, v)
	}
	return out
}

func checkPNGs(t *testing.T, dir string, names ...string) {
	t.Helper()
	for _, n := range names {
		f, err := os.Open(filepath.Join(dir, n))
		if err != nil {
			t.Error(err)
			continue
		}
		if _, err := png.Decode(f); err != nil {
			t.Errorf("%s: %v", n, err)
		}
		f.Close()
	}
}

// A short UFPE run on the libvirt lab (what --lab auto picks here): both
// configurations migrate a web-serving guest under an open-loop load,
// every run verified, the requests recorded before, during and after, the
// rate held to half the guest's capacity, and the report written with its
// plots.
func TestScenarioUFPE(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the libvirt lab twice")
	}
	labtest.Image(t)
	out := t.TempDir()
	code, stdout, stderr := vmigrate(t, "scenario", "ufpe", "--sizes", "256M", "--repeat", "1", "--before", "3s", "--after", "3s",
		"--lab", "libvirt", "--accel", "tcg", "--out", out)
	if code != ExitOK {
		t.Fatalf("scenario ufpe: exit %d: %s", code, stderr)
	}
	runs := readJSONLines[scenarios.UFPERun](t, filepath.Join(out, "ufpe-runs.jsonl"))
	if len(runs) != 2 {
		t.Fatalf("%d runs", len(runs))
	}
	for _, r := range runs {
		if r.Error != "" || !r.Verified || r.Lab != "libvirt" || !strings.HasPrefix(r.Info.Command, "vmigrate ") || r.Info.Cores < 1 || r.QEMU == "" {
			t.Errorf("%s: error %q, verified %v, lab %s, info %+v, qemu %q", r.Config, r.Error, r.Verified, r.Lab, r.Info, r.QEMU)
		}
		if r.CapacityRPS <= 0 || r.Rate <= 0 || r.Rate > r.CapacityRPS/2+1 {
			t.Errorf("%s: capacity %.0f/s, rate %.0f/s: want at most half", r.Config, r.CapacityRPS, r.Rate)
		}
		if r.Before.Requests == 0 || r.During.Requests == 0 || r.After.Requests == 0 || r.Outside.Requests != r.Before.Requests+r.After.Requests {
			t.Errorf("%s: requests before %d, during %d, after %d, outside %d", r.Config, r.Before.Requests, r.During.Requests, r.After.Requests, r.Outside.Requests)
		}
		if !(r.MigStartS >= 2.9 && r.MigStartS < r.SwitchoverS+0.001 && r.SwitchoverS <= r.MigEndS && r.MigEndS < r.LoadEndS) {
			t.Errorf("%s: phases %.2f %.2f %.2f %.2f", r.Config, r.MigStartS, r.SwitchoverS, r.MigEndS, r.LoadEndS)
		}
		if r.LinkPeakMbps <= 0 || len(r.Buckets) == 0 {
			t.Errorf("%s: link peak %.0f Mbit/s, %d buckets", r.Config, r.LinkPeakMbps, len(r.Buckets))
		}
		if _, err := os.Stat(r.RequestsFile); err != nil {
			t.Errorf("%s: requests: %v", r.Config, err)
		}
	}
	md, err := os.ReadFile(filepath.Join(out, "ufpe.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Lab: libvirt.", "| 256M | qemu-default | 1 |", "| 256M | vmigrate-auto | 1 |", "![Throughput, 256M, vmigrate-auto, run 1]"} {
		if !strings.Contains(string(md), want) || !strings.Contains(stdout, "| 256M |") {
			t.Errorf("ufpe.md lacks %q:\n%s", want, md)
		}
	}
	checkPNGs(t, out, "ufpe-time.png", "ufpe-response.png", "ufpe-256M-qemu-default-response.png", "ufpe-256M-vmigrate-auto-throughput.png")
}

// A short CloudNet run on the QMP lab: one workload with web requests in
// both modes, each verified, the table with the paper's figures and the
// ratios, and the plots.
func TestScenarioCloudNet(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the lab twice")
	}
	labtest.Image(t)
	out := t.TempDir()
	code, stdout, stderr := vmigrate(t, "scenario", "cloudnet", "--workloads", "tpcw", "--mem", "384M", "--repeat", "1",
		"--wan-bandwidth", "1gbit", "--wan-rtt", "2ms", "--max-time", "60s", "--lab", "qmp", "--accel", "tcg", "--out", out)
	if code != ExitOK {
		t.Fatalf("scenario cloudnet: exit %d: %s", code, stderr)
	}
	runs := readJSONLines[scenarios.CloudNetRun](t, filepath.Join(out, "cloudnet-runs.jsonl"))
	if len(runs) != 2 {
		t.Fatalf("%d runs", len(runs))
	}
	for _, r := range runs {
		if r.Error != "" || !r.Verified || r.Lab != "qmp" || r.WireBytes == 0 || r.During.Requests == 0 {
			t.Errorf("%s: error %q, verified %v, lab %s, wire %d, requests during %d", r.Mode, r.Error, r.Verified, r.Lab, r.WireBytes, r.During.Requests)
		}
	}
	if runs[0].Mode != scenarios.ModeDefault || runs[1].Mode != scenarios.ModeOptimised || runs[1].WireBytes >= runs[0].WireBytes {
		t.Errorf("default %d bytes, optimised %d: want the codec to send less", runs[0].WireBytes, runs[1].WireBytes)
	}
	md, err := os.ReadFile(filepath.Join(out, "cloudnet.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"| tpcw | default | 1 |", "| tpcw | optimised | 1 |", "1.5 GB, 135 s, 3.7 s", "(paper 0.60)"} {
		if !strings.Contains(string(md), want) || !strings.Contains(stdout, "| tpcw |") {
			t.Errorf("cloudnet.md lacks %q:\n%s", want, md)
		}
	}
	checkPNGs(t, out, "cloudnet-ratios.png", "cloudnet-data.png", "cloudnet-time.png")
}
