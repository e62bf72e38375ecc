package command

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmigrate/vmigrate/lab/labtest"
	"github.com/vmigrate/vmigrate/scenarios"
)

// A short Lai run (one repeat, plain and index, a fast link) writes its
// JSON and markdown, each run verified with identical disks, and the
// index sends far fewer bytes than plain.
func TestScenarioLai(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the lab twice with a 2 GiB disk")
	}
	labtest.Image(t)
	out := t.TempDir()
	code, stdout, stderr := vmigrate(t, "scenario", "lai", "--repeat", "1", "--modes", "plain,index", "--mem", "256M",
		"--wan-bandwidth", "1gbit", "--wan-rtt", "2ms", "--accel", "tcg", "--out", out)
	if code != ExitOK {
		t.Fatalf("scenario lai: exit %d: %s", code, stderr)
	}
	var res scenarios.LaiResult
	b, err := os.ReadFile(filepath.Join(out, "lai.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	if len(res.Runs) != 2 || len(res.Rows) != 2 {
		t.Fatalf("%d runs, %d rows", len(res.Runs), len(res.Rows))
	}
	for _, r := range res.Runs {
		if r.Error != "" || !r.Verified || !r.DisksIdentical {
			t.Errorf("%s run: error %q, verified %v, disks identical %v", r.Mode, r.Error, r.Verified, r.DisksIdentical)
		}
	}
	plain, index := res.Rows[0], res.Rows[1]
	if index.DiskWireBytes*5 > plain.DiskWireBytes || index.BytesCut < 0.5 {
		t.Errorf("disk channel: index %d bytes, plain %d; bytes cut %.2f", index.DiskWireBytes, plain.DiskWireBytes, index.BytesCut)
	}
	md, err := os.ReadFile(filepath.Join(out, "lai.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Command: `vmigrate", "| plain | 1 |", "| index | 1 |", "Lai et al."} {
		if !strings.Contains(string(md), want) || !strings.Contains(stdout, "| index | 1 |") {
			t.Errorf("lai.md or stdout lacks %q:\n%s", want, md)
		}
	}
}

func TestScenarioLaiBadFlags(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the flags are checked after the root check")
	}
	out := filepath.Join(t.TempDir(), "never")
	for _, args := range [][]string{
		{"--modes", "plain,fast"},
		{"--repeat", "0"},
		{"--mem", "12M"},
		{"--os-size", "100M"},
		{"--wan-bandwidth", "lots"},
		{"--accel", "xen"},
		{"extra-arg"},
	} {
		code, stdout, stderr := vmigrate(t, append([]string{"scenario", "lai", "--out", out}, args...)...)
		if code != ExitUsage || stdout != "" || !strings.Contains(stderr, "vmigrate: ") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q", args, code, stdout, stderr)
		}
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("a refused run made --out: %v", err)
	}
}

func TestBenchNativeBadFlags(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the flags are checked after the root check")
	}
	out := filepath.Join(t.TempDir(), "never")
	for _, args := range [][]string{
		{"--bodies", "random,json"},
		{"--configs", "qemu-default,multifd-zstd99"},
		{"--configs", "vmigrate-best"},
		{"--repeat", "0"},
		{"--mem", "100M"},
		{"--wss", "1G"},
		{"--bpp", "0"},
		{"--max-time", "1s"},
		{"--wan-rtt", "soon"},
		{"--accel", "hvf"},
	} {
		code, stdout, stderr := vmigrate(t, append([]string{"bench", "native", "--out", out}, args...)...)
		if code != ExitUsage || stdout != "" || !strings.Contains(stderr, "vmigrate: ") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q", args, code, stdout, stderr)
		}
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("a refused bench made --out: %v", err)
	}
}

// A short bench: QEMU's default, multifd with zstd (several connections
// through the link) and vmigrate's codec, one round on a small guest; each
// run verified, the report written with both sides' best.
func TestBenchNative(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the lab three times")
	}
	labtest.Image(t)
	out := t.TempDir()
	code, stdout, stderr := vmigrate(t, "bench", "native", "--bodies", "text", "--configs", "qemu-default,multifd-zstd1,vmigrate-auto",
		"--repeat", "1", "--mem", "256M", "--wss", "32M", "--rate", "1000", "--wan-bandwidth", "1gbit", "--wan-rtt", "2ms",
		"--max-time", "60s", "--accel", "tcg", "--out", out)
	if code != ExitOK {
		t.Fatalf("bench native: exit %d: %s", code, stderr)
	}
	var res scenarios.NativeResult
	b, err := os.ReadFile(filepath.Join(out, "native.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	if len(res.Runs) != 3 {
		t.Fatalf("%d runs", len(res.Runs))
	}
	for _, r := range res.Runs {
		if r.Error != "" || !r.Verified || r.WireBytes == 0 || r.CPU == nil || r.CPU.SrcQEMUMs == 0 {
			t.Errorf("%s: error %q, verified %v, %d wire bytes, cpu %+v", r.Config, r.Error, r.Verified, r.WireBytes, r.CPU)
		}
		if r.Config == "multifd-zstd1" && (r.Result == nil || r.Result.StreamBytesSource != "link") {
			t.Errorf("multifd run did not go through the link path: %+v", r.Result)
		}
	}
	lines, err := os.ReadFile(filepath.Join(out, "native-runs.jsonl"))
	if err != nil || strings.Count(string(lines), "\n") != 3 {
		t.Errorf("native-runs.jsonl: %v, %d lines", err, strings.Count(string(lines), "\n"))
	}
	if !strings.Contains(stdout, "| text | ") || !strings.Contains(stdout, "best QEMU") {
		t.Errorf("stdout:\n%s", stdout)
	}
}

// bench report rebuilds the tables from kept runs, of several files, and
// refuses a file that is not runs.
func TestBenchReport(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.jsonl"), filepath.Join(dir, "b.jsonl")
	runs := func(rs ...scenarios.NativeRun) []byte {
		var out []byte
		for _, r := range rs {
			j, _ := json.Marshal(r)
			out = append(append(out, j...), '\n')
		}
		return out
	}
	os.WriteFile(a, runs(
		scenarios.NativeRun{Body: "text", Config: "multifd-zstd1", Rep: 1, WireBytes: 48 << 20, TotalMS: 4400, Verified: true},
		scenarios.NativeRun{Body: "text", Config: "vmigrate-max", Rep: 1, WireBytes: 40 << 20, TotalMS: 7500, Verified: true},
	), 0o644)
	os.WriteFile(b, runs(scenarios.NativeRun{Body: "files", Config: "vmigrate-max", Rep: 1, WireBytes: 90 << 20, TotalMS: 9000, Verified: true}), 0o644)
	out := filepath.Join(dir, "out")
	code, stdout, stderr := vmigrate(t, "bench", "report", "--out", out, "--max-time", "100s", a, b)
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, want := range []string{"| text | multifd-zstd1 | 1 | 48 MiB", "| files | vmigrate-max | 1 | 90 MiB", "| text | multifd-zstd1 | vmigrate-max | 0.83x | 1.70x |"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("stdout lacks %q:\n%s", want, stdout)
		}
	}
	if strings.Contains(stdout, "| files | multifd-zstd1") {
		t.Errorf("a configuration the body never ran has a row:\n%s", stdout)
	}
	if _, err := os.Stat(filepath.Join(out, "native.md")); err != nil {
		t.Error(err)
	}
	bad := filepath.Join(dir, "bad.jsonl")
	os.WriteFile(bad, []byte("{\"body\":\"text\"}\nnot json\n"), 0o644)
	if code, _, stderr := vmigrate(t, "bench", "report", "--out", filepath.Join(dir, "never"), bad); code != ExitUsage || !strings.Contains(stderr, "bad.jsonl:1") {
		t.Errorf("bad runs: exit %d, %s", code, stderr)
	}
	if code, _, _ := vmigrate(t, "bench", "report"); code != ExitUsage {
		t.Errorf("no file: exit %d", code)
	}
}
