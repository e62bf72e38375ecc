package command

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmigrate/vmigrate/lab/labtest"
)

// `vmigrate lab` runs until Ctrl-C and then removes its QEMUs, namespace
// and run directory.
func TestLabInterruptCleansUp(t *testing.T) {
	labtest.Image(t)
	bin := testBinary(t)
	cmd := exec.Command(bin, "lab", "--mem", "256M", "--workload", "idle", "--accel", "tcg")
	cmd.Env = append(os.Environ(), "VMIGRATE_CACHE="+labtest.CacheDir())
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()

	var netns, runDir string
	lines := make(chan string)
	go func() {
		s := bufio.NewScanner(stdout)
		for s.Scan() {
			lines <- s.Text()
		}
		close(lines)
	}()
	deadline := time.After(2 * time.Minute)
wait:
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("lab exited early: %s", stderr.String())
			}
			if i := strings.Index(line, "from namespace "); i >= 0 {
				netns = strings.TrimSpace(line[i+len("from namespace "):])
			}
			if strings.Contains(line, "source QMP") {
				runDir = filepath.Dir(strings.Fields(line)[2])
			}
			if strings.Contains(line, "Ctrl-C tears it down") {
				break wait
			}
		case <-deadline:
			t.Fatalf("lab not up after 2 minutes: %s", stderr.String())
		}
	}
	if netns == "" || runDir == "" {
		t.Fatalf("lab did not print its namespace and sockets")
	}
	pidsOut, err := exec.Command("ip", "netns", "pids", netns).Output()
	if err != nil || len(strings.Fields(string(pidsOut))) != 2 {
		t.Fatalf("want 2 QEMUs in %s, got %q (%v)", netns, pidsOut, err)
	}
	cmd.Process.Signal(os.Interrupt)
	go func() {
		for range lines {
		}
	}()
	if err := cmd.Wait(); err != nil {
		t.Errorf("lab after Ctrl-C: %v; stderr %s", err, stderr.String())
	}
	for _, p := range strings.Fields(string(pidsOut)) {
		if _, err := os.Stat("/proc/" + p); err == nil {
			t.Errorf("QEMU %s still running", p)
		}
	}
	if out, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(out), netns) {
		t.Errorf("namespace %s left behind", netns)
	}
	if _, err := os.Stat(runDir); err == nil {
		t.Errorf("run directory %s left behind", runDir)
	}
}

// Without root the lab says so in one sentence and starts nothing.
func TestLabNeedsRoot(t *testing.T) {
	labtest.Image(t)
	if _, err := exec.LookPath("setpriv"); err != nil {
		labtest.Unavailable(t, "setpriv (util-linux) missing")
	}
	bin := testBinary(t)
	cmd := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", bin, "--cache-dir", labtest.CacheDir(), "lab", "--mem", "256M")
	out, err := cmd.CombinedOutput()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() == 0 {
		t.Fatalf("lab as nobody: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "needs root") || strings.Count(strings.TrimSpace(string(out)), "\n") > 0 {
		t.Errorf("want one line saying it needs root, got:\n%s", out)
	}
}
