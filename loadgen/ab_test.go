package loadgen

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"testing"
	"time"
)

// abReport is what the tests read from ab's summary.
type abReport struct {
	Complete int     // "Complete requests: N"
	Failed   int     // "Failed requests: N"
	MeanMS   float64 // "Time per request: X [ms] (mean)", one client's
}

var (
	abComplete = regexp.MustCompile(`(?m)^Complete requests:\s+(\d+)$`)
	abFailed   = regexp.MustCompile(`(?m)^Failed requests:\s+(\d+)$`)
	abMean     = regexp.MustCompile(`(?m)^Time per request:\s+([\d.]+) \[ms\] \(mean\)$`)
)

// parseAb reads ab's summary; every field above must be there.
func parseAb(out string) (abReport, error) {
	var r abReport
	for _, f := range []struct {
		re  *regexp.Regexp
		set func(string) error
	}{
		{abComplete, func(s string) error { return atoi(s, &r.Complete) }},
		{abFailed, func(s string) error { return atoi(s, &r.Failed) }},
		{abMean, func(s string) error { return atof(s, &r.MeanMS) }},
	} {
		m := f.re.FindStringSubmatch(out)
		if m == nil {
			return r, fmt.Errorf("ab output: no line matching %s", f.re)
		}
		if err := f.set(m[1]); err != nil {
			return r, fmt.Errorf("ab output: %q: %w", m[0], err)
		}
	}
	return r, nil
}

// The parser reads the summary of a real ab run (Debian's apache2-utils,
// ab 2.3, -n 200 -c 1).
func TestParseAb(t *testing.T) {
	b, err := os.ReadFile("testdata/ab-c1.txt")
	if err != nil {
		t.Fatal(err)
	}
	r, err := parseAb(string(b))
	if err != nil {
		t.Fatal(err)
	}
	if want := (abReport{Complete: 200, Failed: 0, MeanMS: 2.960}); r != want {
		t.Errorf("parsed %+v, want %+v", r, want)
	}
	if _, err := parseAb(string(b[:len(b)/3])); err == nil {
		t.Error("a third of an output parsed without error")
	}
}

// A closed-loop sanity check: ab with one request at a time and loadgen at
// a rate the server keeps up with see the same latency, within 10%, from a
// server that answers after 10 ms. Here the two loops measure the same
// thing, since no request ever waits for another.
func TestAgainstAb(t *testing.T) {
	bin := requireTool(t, "ab")
	if testing.Short() {
		t.Skip("ab comparison skipped in -short mode")
	}
	if measuredWithoutRace(t) {
		return
	}
	const n = 300
	addr := pageServerProcess(t, 10*time.Millisecond)
	var bestA, bestL float64
	for round := range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		out, err := exec.CommandContext(ctx, bin, "-n", strconv.Itoa(n), "-c", "1", "http://"+addr+"/x").CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("ab: %v\n%s", err, out)
		}
		a, err := parseAb(string(out))
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		res, err := Run(context.Background(), Config{URL: "http://" + addr + "/x", Rate: 100, Duration: n * 10 * time.Millisecond, NewConnPerRequest: true})
		if err != nil {
			t.Fatal(err)
		}
		s := res.Summary(0, 0)
		t.Logf("round %d: ab %d/%d complete, mean %.2f ms; loadgen %d/%d ok, mean %.2f ms (p50 %.2f)", round, a.Complete-a.Failed, n, a.MeanMS, s.OK, s.Requests, s.MeanMS, s.P50MS)
		if a.Complete-a.Failed < n || s.OK < n {
			continue
		}
		if bestA == 0 || a.MeanMS < bestA {
			bestA = a.MeanMS
		}
		if bestL == 0 || s.MeanMS < bestL {
			bestL = s.MeanMS
		}
		if relDiff(bestL, bestA) <= 0.10 {
			break
		}
	}
	if bestA == 0 {
		t.Fatal("no round without failures")
	}
	if d := relDiff(bestL, bestA); d > 0.10 {
		t.Errorf("mean latency: loadgen %.2f ms, ab %.2f ms: %.1f%% apart, want at most 10%%", bestL, bestA, 100*d)
	} else {
		t.Logf("mean latency: loadgen %.2f ms, ab %.2f ms: %.1f%% apart", bestL, bestA, 100*d)
	}
}
