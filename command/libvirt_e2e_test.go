package command

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmigrate/vmigrate/lab/labtest"
	"github.com/vmigrate/vmigrate/scenarios"
)

// run --domain refuses bad flags and unknown domains with exit 2 and a
// message that says what is wrong. The hosts are libvirt's test driver.
func TestRunDomainBadInput(t *testing.T) {
	host, err := filepath.Abs("../migrate/testdata/libvirt-src.xml")
	if err != nil {
		t.Fatal(err)
	}
	empty, _ := filepath.Abs("../migrate/testdata/libvirt-dst-empty.xml")
	src, dst := "test://"+host, "test://"+empty
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"run", "--domain", "web"}, "--domain needs --src-uri and --dst-uri"},
		{[]string{"run", "--domain", "web", "--src-uri", src, "--dst-uri", dst, "--src-qmp", "/x"}, "--src-qmp is for QMP migrations"},
		{[]string{"run", "--domain", "web", "--src-uri", src, "--dst-uri", src}, "are the same"},
		{[]string{"run", "--domain", "web", "--src-uri", src, "--dst-uri", dst, "--migrate-socket", "rel.sock"}, "absolute path"},
		{[]string{"run", "--domain", "web", "--src-uri", src, "--dst-uri", dst, "--listen-socket", "/tmp/x.sock"}, "need --migrate-socket"},
		{[]string{"run", "--src-qmp", "/a", "--dst-qmp", "/b", "--p2p"}, "--p2p needs --domain"},
		{[]string{"run", "--domain", "nosuch", "--src-uri", src, "--dst-uri", dst}, `no such domain "nosuch"`},
		{[]string{"run", "--domain", "stopped", "--src-uri", src, "--dst-uri", dst}, "source VM is not running"},
		{[]string{"run", "--domain", "web", "--src-uri", "qemu+unix:///system?socket=/nonexistent/sock", "--dst-uri", dst}, "cannot connect to libvirt"},
	}
	for _, tc := range cases {
		code, out, errOut := vmigrate(t, tc.args...)
		if code != ExitUsage || !strings.Contains(out+errOut, tc.want) {
			t.Errorf("%q: exit %d, output %q; want exit %d and %q", tc.args, code, out+errOut, ExitUsage, tc.want)
		}
	}
}

// demo --libvirt moves the lab's domain between two libvirt daemons
// through the tunnel and the codec over an emulated WAN, and the guest
// passes /verify on the destination.
func TestDemoLibvirt(t *testing.T) {
	labtest.Image(t)
	code, out, _ := vmigrate(t, "demo", "--libvirt", "--mem", "256M", "--workload", "memdirty:wss=64M,rate=2000",
		"--wan-bandwidth", "100mbit", "--wan-rtt", "50ms", "--json")
	if code != ExitOK {
		t.Fatalf("exit %d", code)
	}
	var res scenarios.DemoResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatal(err)
	}
	if !res.Verified || res.PagesWrong != 0 || res.Codec == nil || res.WireBytes == 0 || res.Decision == nil || res.DestStatus != "running" || res.SourceStatus != "undefined" {
		t.Errorf("result: verified %v, wrong %d, codec %v, wire %d, decision %+v, dest %q, source %q",
			res.Verified, res.PagesWrong, res.Codec != nil, res.WireBytes, res.Decision, res.DestStatus, res.SourceStatus)
	}
}

// lab --libvirt starts two libvirt hosts, prints a run --domain command
// for them, and tears everything down when --for ends.
func TestLabLibvirt(t *testing.T) {
	labtest.Image(t)
	code, out, _ := vmigrate(t, "lab", "--libvirt", "--mem", "256M", "--workload", "idle", "--for", "1s")
	if code != ExitOK {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{"libvirt lab up", "vmigrate run --domain vmigrate-guest --src-uri 'qemu+unix:///system?socket=", "--listen-socket", "--forward-socket"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	i := strings.Index(out, "socket=")
	j := strings.Index(out[i:], "'")
	if sock := out[i+len("socket=") : i+j]; labtest.Exists(sock) {
		t.Errorf("the source daemon's socket %s is still there after the lab ended", sock)
	}
}
