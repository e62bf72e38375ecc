package command

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/vmigrate/vmigrate/loadgen"
)

// vmigrate loadgen against a real server: the JSON summary counts what
// the server answered; bad flags are refused before anything is sent.
func TestLoadgenCommand(t *testing.T) {
	var hits, fails atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/fail" {
			fails.Add(1)
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		hits.Add(1)
		w.Write([]byte("page"))
	}))
	defer srv.Close()
	code, stdout, stderr := vmigrate(t, "loadgen", "--url", srv.URL+"/", "--rate", "200", "--duration", "1s", "--json")
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var s loadgen.Summary
	if err := json.Unmarshal([]byte(stdout), &s); err != nil {
		t.Fatalf("%v: %s", err, stdout)
	}
	if s.Requests != 200 || s.OK != 200 || hits.Load() != 200 || s.SendRate < 180 || s.SendRate > 220 {
		t.Errorf("summary %+v, server saw %d", s, hits.Load())
	}
	code, stdout, _ = vmigrate(t, "loadgen", "--url", srv.URL+"/fail", "--rate", "50", "--duration", "200ms")
	if code != ExitOK || fails.Load() != 10 || !strings.Contains(stdout, "requests  10: 0 ok") || !strings.Contains(stdout, "http-error") {
		t.Errorf("failing server: exit %d, %d requests seen:\n%s", code, fails.Load(), stdout)
	}
	before := hits.Load() + fails.Load()
	for _, args := range [][]string{
		{"--url", srv.URL, "--rate", "0", "--duration", "1s"},
		{"--url", "ftp://host/", "--rate", "10", "--duration", "1s"},
		{"--url", srv.URL, "--rate", "10", "--duration", "-1s"},
		{"--url", srv.URL, "--rate", "10", "--duration", "1s", "--timeout", "0s"},
	} {
		code, stdout, stderr := vmigrate(t, append([]string{"loadgen"}, args...)...)
		if code != ExitUsage || stdout != "" || !strings.Contains(stderr, "vmigrate: ") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q", args, code, stdout, stderr)
		}
	}
	if n := hits.Load() + fails.Load(); n != before {
		t.Errorf("refused runs sent %d requests", n-before)
	}
}
