package loadgen

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// TestMain lets the test binary double as the page server of
// TestAgainstHttperf, and removes the binary measuredWithoutRace built.
func TestMain(m *testing.M) {
	if d := os.Getenv(pageServerEnv); d != "" {
		servePages(d)
	}
	code := m.Run()
	if noRace.dir != "" {
		os.RemoveAll(noRace.dir)
	}
	os.Exit(code)
}

// noRaceEnv marks the test binary that measuredWithoutRace built.
const noRaceEnv = "LOADGEN_TEST_NO_RACE"

// noRace is this package's test binary built without the race detector,
// built once.
var noRace struct {
	once     sync.Once
	dir, bin string
	out      []byte
	err      error
}

// timedLaterEnv, set to "later", skips the tests whose assertions are on
// time: make test sets it for its parallel run of every package (QEMU
// guests among them, which starve the clients and servers of these tests
// of CPU) and then runs this package alone, without -race.
const timedLaterEnv = "VMIGRATE_TIMED_TESTS"

// measuredWithoutRace runs t, a test whose assertions are on time, again in
// this package's test binary built without the race detector, and reports
// true, when this binary has the detector: it slows loadgen down several
// times, and the test would measure the detector. The caller then returns.
// The other tests check the same code under the detector. With
// VMIGRATE_TIMED_TESTS=later it skips t (see timedLaterEnv).
func measuredWithoutRace(t *testing.T) bool {
	t.Helper()
	if os.Getenv(timedLaterEnv) == "later" {
		t.Skipf("a timed test: %s=later, make test runs it after the parallel run, alone", timedLaterEnv)
	}
	if !raceEnabled {
		return false
	}
	if os.Getenv(noRaceEnv) != "" {
		t.Fatal("the test binary built without -race has the race detector (is -race in $GOFLAGS?)")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		unavailable(t, "the go command, to build the test without -race, is not in $PATH")
	}
	noRace.once.Do(func() {
		if noRace.dir, noRace.err = os.MkdirTemp("", "loadgen-norace-"); noRace.err != nil {
			return
		}
		noRace.bin = filepath.Join(noRace.dir, "loadgen.test")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		noRace.out, noRace.err = exec.CommandContext(ctx, goBin, "test", "-c", "-o", noRace.bin, ".").CombinedOutput()
	})
	if noRace.err != nil {
		t.Fatalf("go test -c: %v\n%s", noRace.err, noRace.out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, noRace.bin, "-test.run", "^"+t.Name()+"$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), noRaceEnv+"=1")
	out, err := cmd.CombinedOutput()
	t.Logf("%s, built without -race:\n%s", t.Name(), out)
	switch {
	case err != nil:
		t.Fatalf("%s without -race: %v", t.Name(), err)
	case bytes.Contains(out, []byte("--- SKIP: "+t.Name()+" ")):
		t.Skipf("%s without -race skipped", t.Name())
	}
	return true
}
