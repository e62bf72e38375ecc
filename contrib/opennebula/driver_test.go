// Package opennebula_test checks the OpenNebula migrate actions in this
// directory against a fake vmigrate: a shell script that records its
// arguments, prints a canned JSON result and exits with a chosen code. The
// tests need neither root, QEMU nor libvirt.
package opennebula_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fakeVmigrate records its argv, one per line, in $FAKE_DIR/argv, copies
// $FAKE_DIR/stderr to stderr and $FAKE_DIR/json to stdout, and exits with
// $FAKE_RC. With FAKE_HANG=1 it waits for SIGTERM first and then reports a
// cancelled migration.
const fakeVmigrate = `#!/bin/sh
printf '%s\n' "$@" > "$FAKE_DIR/argv"
if [ "${FAKE_HANG:-}" = 1 ]; then
	trap 'kill "$pid" 2>/dev/null; printf "{\n  \"status\": \"cancelled\",\n  \"error\": \"interrupted\"\n}\n"; exit 3' TERM
	touch "$FAKE_DIR/running"
	sleep 30 &
	pid=$!
	wait "$pid"
	exit 99
fi
[ -f "$FAKE_DIR/stderr" ] && cat "$FAKE_DIR/stderr" >&2
[ -f "$FAKE_DIR/json" ] && cat "$FAKE_DIR/json"
exit "${FAKE_RC:-0}"
`

// result is one run of an action script.
type result struct {
	code   int
	stderr string
	argv   []string // the fake's arguments; nil if it never ran
}

// fake is a fake vmigrate in its own directory.
type fake struct {
	dir string
	bin string
}

func newFake(t *testing.T) *fake {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "vmigrate")
	if err := os.WriteFile(bin, []byte(fakeVmigrate), 0o755); err != nil {
		t.Fatal(err)
	}
	return &fake{dir: dir, bin: bin}
}

// answer sets what the fake prints and how it exits.
func (f *fake) answer(t *testing.T, code int, json, stderr string) {
	t.Helper()
	for name, s := range map[string]string{"json": json, "stderr": stderr} {
		if err := os.WriteFile(filepath.Join(f.dir, name), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(f.dir, "rc"), []byte(fmt.Sprint(code)), 0o644); err != nil {
		t.Fatal(err)
	}
}

// env is a clean environment for a script: nothing of the caller's
// VMIGRATE_* or kvmrc variables, no config files, the fake as vmigrate.
func (f *fake) env(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "VMIGRATE") || strings.HasPrefix(kv, "QEMU_PROTOCOL=") || strings.HasPrefix(kv, "LIBVIRT_URI=") || strings.HasPrefix(kv, "FAKE_") {
			continue
		}
		env = append(env, kv)
	}
	rc, _ := os.ReadFile(filepath.Join(f.dir, "rc"))
	env = append(env, "VMIGRATE="+f.bin, "VMIGRATE_RC=", "VMIGRATE_KVMRC=", "FAKE_DIR="+f.dir, "FAKE_RC="+string(rc))
	return append(env, extra...)
}

// command prepares a run of an action script; stdin is its standard input.
func (f *fake) command(ctx context.Context, t *testing.T, script string, args []string, stdin string, env ...string) *exec.Cmd {
	t.Helper()
	os.Remove(filepath.Join(f.dir, "argv"))
	cmd := exec.CommandContext(ctx, "./"+script, args...)
	cmd.Env = f.env(env...)
	cmd.Stdin = strings.NewReader(stdin)
	return cmd
}

func (f *fake) finish(t *testing.T, cmd *exec.Cmd, err error, stderr string) result {
	t.Helper()
	r := result{stderr: stderr}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("%s: %v", cmd, err)
	}
	if b, err := os.ReadFile(filepath.Join(f.dir, "argv")); err == nil {
		r.argv = strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	}
	checkLines(t, r)
	return r
}

// run runs an action script to its end.
func (f *fake) run(t *testing.T, script string, args []string, stdin string, env ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := f.command(ctx, t, script, args, stdin, env...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	err := cmd.Run()
	return f.finish(t, cmd, err, stderr.String())
}

// oned turns stderr lines of this shape into VM log entries
// (DriverExecHelper); any other line becomes the failure message.
var logLine = regexp.MustCompile(`^(ERROR|INFO|WARN|DEBUG): migrate(_local)?: \S`)

// checkLines: on success every stderr line is a log line; on failure all
// but one, the plain failure message, which repeats the last ERROR.
func checkLines(t *testing.T, r result) {
	t.Helper()
	var plain []string
	lastError := ""
	for _, l := range strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n") {
		if l == "" {
			continue
		}
		if logLine.MatchString(l) {
			if strings.HasPrefix(l, "ERROR: ") {
				lastError = l[strings.Index(l[len("ERROR: "):], ": ")+len("ERROR: ")+2:]
			}
			continue
		}
		plain = append(plain, l)
	}
	switch {
	case r.code == 0 && len(plain) > 0:
		t.Errorf("success with lines oned would not log: %q\nstderr:\n%s", plain, r.stderr)
	case r.code != 0 && (len(plain) != 1 || plain[0] != lastError):
		t.Errorf("failure: want one plain line repeating the last ERROR %q, got %q\nstderr:\n%s", lastError, plain, r.stderr)
	}
}

func actionXML(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("testdata/action.xml")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// withHint puts FEATURES/MIGRATE_VMIGRATE_ARGS into the action data.
func withHint(t *testing.T, xml, hint string) string {
	t.Helper()
	out := strings.Replace(xml, "<FEATURES>", "<FEATURES>\n        <MIGRATE_VMIGRATE_ARGS>"+hint+"</MIGRATE_VMIGRATE_ARGS>", 1)
	if out == xml {
		t.Fatal("no FEATURES in testdata/action.xml")
	}
	return out
}

// oneArgs is what OpenNebula passes: deploy_id dst src vmid host.
var oneArgs = []string{"one-42", "node2.example.net", "node1.example.net", "42", "node1.example.net"}

const okJSON = `{
  "status": "completed",
  "total_ms": 5234,
  "qemu_total_ms": 5100,
  "setup_ms": 12,
  "downtime_ms": 48,
  "passes": [],
  "policy": "smart",
  "source_status": "postmigrate",
  "dest_status": "running"
}
`

// failJSON is a failed result as vmigrate prints it: encoding/json with
// two-space indentation, so <, > and & come out as \u003c, \u003e, \u0026.
func failJSON(status, msg, stage string) string {
	b, err := json.MarshalIndent(struct {
		Status       string `json:"status"`
		Error        string `json:"error"`
		Stage        string `json:"stage"`
		TotalMS      int64  `json:"total_ms"`
		Passes       []any  `json:"passes"`
		Policy       string `json:"policy"`
		SourceStatus string `json:"source_status"`
	}{status, msg, stage, 800, []any{}, "smart", "running"}, "", "  ")
	if err != nil {
		panic(err)
	}
	return string(b) + "\n"
}

func TestSyntax(t *testing.T) {
	for _, s := range []string{"migrate", "migrate_local"} {
		if out, err := exec.Command("bash", "-n", s).CombinedOutput(); err != nil {
			t.Errorf("bash -n %s: %v\n%s", s, err, out)
		}
		if fi, err := os.Stat(s); err != nil || fi.Mode()&0o111 == 0 {
			t.Errorf("%s is not executable (%v)", s, err)
		}
	}
}

func TestArgvMapping(t *testing.T) {
	tunnel := []string{"--tunnel-peer", "node2.example.net:7000", "--psk-file", "/etc/vmigrate/key"}
	tests := []struct {
		name string
		args []string
		env  []string
		want []string
	}{
		{
			name: "defaults",
			args: oneArgs,
			want: slices.Concat([]string{"run", "--domain", "one-42", "--src-uri", "qemu:///system", "--dst-uri", "qemu+ssh://node2.example.net/system"},
				tunnel, []string{"--migrate-socket", "/run/vmigrate/migration.sock", "--json"}),
		},
		{
			name: "three arguments",
			args: oneArgs[:3],
			want: slices.Concat([]string{"run", "--domain", "one-42", "--src-uri", "qemu:///system", "--dst-uri", "qemu+ssh://node2.example.net/system"},
				tunnel, []string{"--migrate-socket", "/run/vmigrate/migration.sock", "--json"}),
		},
		{
			name: "lab overrides",
			args: oneArgs,
			env: []string{"VMIGRATE_SRC_URI=qemu+unix:///system?socket=/tmp/a/libvirt.sock", "VMIGRATE_DST_URI=qemu+unix:///system?socket=/tmp/b/libvirt.sock",
				"VMIGRATE_SOCKET=/tmp/m.sock", "VMIGRATE_TUNNEL_PORT=7100", "VMIGRATE_PSK_FILE=/tmp/k"},
			want: []string{"run", "--domain", "one-42", "--src-uri", "qemu+unix:///system?socket=/tmp/a/libvirt.sock", "--dst-uri", "qemu+unix:///system?socket=/tmp/b/libvirt.sock",
				"--tunnel-peer", "node2.example.net:7100", "--psk-file", "/tmp/k", "--migrate-socket", "/tmp/m.sock", "--json"},
		},
		{
			name: "no tunnel",
			args: oneArgs,
			env:  []string{"VMIGRATE_NO_TUNNEL=1"},
			want: []string{"run", "--domain", "one-42", "--src-uri", "qemu:///system", "--dst-uri", "qemu+ssh://node2.example.net/system", "--migrate-socket", "/run/vmigrate/migration.sock", "--json"},
		},
		{
			name: "ipv6 destination",
			args: []string{"one-42", "fd00::2", "fd00::1", "42", "fd00::1"},
			want: slices.Concat([]string{"run", "--domain", "one-42", "--src-uri", "qemu:///system", "--dst-uri", "qemu+ssh://[fd00::2]/system",
				"--tunnel-peer", "[fd00::2]:7000", "--psk-file", "/etc/vmigrate/key"}, []string{"--migrate-socket", "/run/vmigrate/migration.sock", "--json"}),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t)
			f.answer(t, 0, okJSON, "")
			r := f.run(t, "migrate", tc.args, actionXML(t), tc.env...)
			if r.code != 0 {
				t.Fatalf("exit %d\n%s", r.code, r.stderr)
			}
			if !slices.Equal(r.argv, tc.want) {
				t.Errorf("vmigrate argv\n got %q\nwant %q", r.argv, tc.want)
			}
		})
	}
}

func TestSuccess(t *testing.T) {
	f := newFake(t)
	f.answer(t, 0, okJSON, "2026-01-02T03:04:05Z\tINFO\tpre-copy pass 1\n")
	r := f.run(t, "migrate", oneArgs, actionXML(t))
	if r.code != 0 {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
	for _, want := range []string{
		"INFO: migrate: VM 42 (one-42): live migration node1.example.net -> node2.example.net with vmigrate",
		"INFO: migrate: vmigrate: 2026-01-02T03:04:05Z\tINFO\tpre-copy pass 1",
		"INFO: migrate: VM 42 (one-42) runs on node2.example.net after 5234 ms, downtime 48 ms",
	} {
		if !strings.Contains(r.stderr, want+"\n") {
			t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
		}
	}
	if strings.Contains(r.stderr, "ERROR:") || strings.Contains(r.stderr, "WARN:") {
		t.Errorf("stderr has an ERROR or WARN:\n%s", r.stderr)
	}
}

func TestFailure(t *testing.T) {
	tests := []struct {
		code   int
		json   string
		stderr string
		want   []string
	}{
		{1, failJSON("failed", `mirror vda: QEMU said "No space left on device" <vda> & C:\new`, "precopy"), "",
			[]string{`ERROR: migrate: migration failed, VM 42 (one-42) still runs on node1.example.net: mirror vda: QEMU said "No space left on device" <vda> & C:\new (stage precopy)`}},
		{2, failJSON("failed", "preflight: the destination already runs a domain of that name", "preflight"), "",
			[]string{"ERROR: migrate: vmigrate refused the migration, nothing was changed, VM 42 (one-42) runs on node1.example.net: preflight: the destination already runs a domain of that name (stage preflight)"}},
		{3, failJSON("cancelled", "precopy: context canceled", "precopy"), "",
			[]string{"ERROR: migrate: migration interrupted, VM 42 (one-42) still runs on node1.example.net: precopy: context canceled"}},
		{4, failJSON("failed", "switchover: destination did not start", "switchover"), "",
			[]string{
				"ERROR: migrate: ATTENTION: VM 42 (one-42) needs attention",
				"(vmigrate saw: source running, destination ?)",
				"ERROR: migrate: migration failed and vmigrate could not confirm that VM 42 (one-42) runs on node1.example.net: the VM needs attention: switchover: destination did not start",
			}},
		// No JSON (vmigrate died early): the last line of its stderr.
		{1, "", "vmigrate: cannot connect to libvirt: qemu+ssh://node2.example.net/system\n",
			[]string{"ERROR: migrate: migration failed, VM 42 (one-42) still runs on node1.example.net: vmigrate: cannot connect to libvirt: qemu+ssh://node2.example.net/system"}},
		// Killed by a signal, or any code vmigrate does not give.
		{137, "", "", []string{"ERROR: migrate: vmigrate exited with status 137; the state of VM 42 (one-42) is unknown and it needs attention"}},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprint(tc.code), func(t *testing.T) {
			f := newFake(t)
			f.answer(t, tc.code, tc.json, tc.stderr)
			r := f.run(t, "migrate", oneArgs, actionXML(t))
			if r.code != tc.code {
				t.Errorf("exit %d, want %d", r.code, tc.code)
			}
			if r.argv == nil {
				t.Error("vmigrate never ran")
			}
			for _, w := range tc.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, r.stderr)
				}
			}
		})
	}
}

// A result that says completed is a switchover: never report a failure
// after it, whatever the exit code.
func TestCompletedWinsOverExitCode(t *testing.T) {
	f := newFake(t)
	f.answer(t, 1, okJSON, "")
	r := f.run(t, "migrate", oneArgs, actionXML(t))
	if r.code != 0 {
		t.Fatalf("exit %d, want 0\n%s", r.code, r.stderr)
	}
	if want := "WARN: migrate: vmigrate exited 1 but reports the migration completed: VM 42 (one-42) runs on node2.example.net"; !strings.Contains(r.stderr, want) {
		t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
	}
}

func TestMigrateLocal(t *testing.T) {
	f := newFake(t)
	stdin := base64.StdEncoding.EncodeToString([]byte(withHint(t, actionXML(t), "<![CDATA[--policy xen]]>")))
	// base64(1) wraps at 76 columns; so may oned.
	var wrapped strings.Builder
	for len(stdin) > 76 {
		wrapped.WriteString(stdin[:76] + "\n")
		stdin = stdin[76:]
	}
	wrapped.WriteString(stdin + "\n")

	f.answer(t, 0, okJSON, "")
	r := f.run(t, "migrate_local", oneArgs, wrapped.String(), "VMIGRATE_NO_TUNNEL=1")
	if r.code != 0 {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
	want := []string{"run", "--domain", "one-42", "--src-uri", "qemu+ssh://node1.example.net/system", "--dst-uri", "qemu+ssh://node2.example.net/system",
		"--migrate-socket", "/run/vmigrate/migration.sock", "--json", "--policy", "xen"}
	if !slices.Equal(r.argv, want) {
		t.Errorf("vmigrate argv\n got %q\nwant %q", r.argv, want)
	}
	if !strings.Contains(r.stderr, "INFO: migrate_local: VM 42 (one-42) runs on node2.example.net") {
		t.Errorf("stderr:\n%s", r.stderr)
	}

	f.answer(t, 1, failJSON("failed", "precopy: link down", "precopy"), "")
	r = f.run(t, "migrate_local", oneArgs, wrapped.String(), "VMIGRATE_NO_TUNNEL=1")
	if r.code != 1 || !strings.Contains(r.stderr, "ERROR: migrate_local: migration failed, VM 42 (one-42) still runs on node1.example.net: precopy: link down") {
		t.Errorf("exit %d\n%s", r.code, r.stderr)
	}

	// With the tunnel on, the front-end is the wrong place for its source end.
	f.answer(t, 0, okJSON, "")
	r = f.run(t, "migrate_local", oneArgs, wrapped.String())
	if r.code != 0 || !strings.Contains(r.stderr, "WARN: migrate_local: migrate_local runs vmigrate on the front-end") {
		t.Errorf("exit %d\n%s", r.code, r.stderr)
	}
}

// Bad input fails before vmigrate runs, with exit 2.
func TestBadInput(t *testing.T) {
	xml := actionXML(t)
	tests := []struct {
		name   string
		script string
		args   []string
		stdin  string
		env    []string
		want   string
	}{
		{"two arguments", "migrate", oneArgs[:2], xml, nil, "ERROR: migrate: usage: migrate deploy_id dst_host src_host [vm_id [host]] (got 2 arguments)"},
		{"six arguments", "migrate", append(slices.Clone(oneArgs), "x"), xml, nil, "(got 6 arguments)"},
		{"no arguments, local", "migrate_local", nil, "", nil, "ERROR: migrate_local: usage: migrate_local"},
		{"same host", "migrate", []string{"one-42", "node1", "node1", "42", "node1"}, xml, nil, "same host node1"},
		{"empty deploy id", "migrate", []string{"", "node2", "node1"}, xml, nil, "bad deploy id"},
		{"host with a slash", "migrate", []string{"one-42", "node2/x", "node1"}, xml, nil, "bad host name"},
		{"not base64", "migrate_local", oneArgs, xml, nil, "stdin is not base64"},
		{"no binary", "migrate", oneArgs, xml, []string{"VMIGRATE=/nonexistent/vmigrate"}, "vmigrate binary '/nonexistent/vmigrate' not found"},
		{"missing rc file", "migrate", oneArgs, xml, []string{"VMIGRATE_RC=/nonexistent/vmigraterc"}, "VMIGRATE_RC=/nonexistent/vmigraterc does not exist"},
		{"bad port", "migrate", oneArgs, xml, []string{"VMIGRATE_TUNNEL_PORT=70x"}, "is not a port number"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t)
			f.answer(t, 0, okJSON, "")
			r := f.run(t, tc.script, tc.args, tc.stdin, tc.env...)
			if r.code != 2 {
				t.Errorf("exit %d, want 2", r.code)
			}
			if r.argv != nil {
				t.Errorf("vmigrate ran with %q", r.argv)
			}
			if !strings.Contains(r.stderr, tc.want) || !strings.Contains(r.stderr, "nothing was changed") {
				t.Errorf("stderr lacks %q and 'nothing was changed':\n%s", tc.want, r.stderr)
			}
		})
	}
}

func TestExtraArgs(t *testing.T) {
	base := []string{"run", "--domain", "one-42", "--src-uri", "qemu:///system", "--dst-uri", "qemu+ssh://node2.example.net/system", "--migrate-socket", "/run/vmigrate/migration.sock", "--json"}
	tests := []struct {
		name     string
		hint     string // FEATURES/MIGRATE_VMIGRATE_ARGS; "" for none
		env      []string
		wantTail []string
		wantWarn string
	}{
		{"config args", "", []string{"VMIGRATE_ARGS=--policy smart  --wan-bandwidth 100mbit"}, []string{"--policy", "smart", "--wan-bandwidth", "100mbit"}, ""},
		{"hint in CDATA after config args", "<![CDATA[--max-downtime 300ms --codec=off]]>", []string{"VMIGRATE_ARGS=--policy smart"},
			[]string{"--policy", "smart", "--max-downtime", "300ms", "--codec=off"}, ""},
		{"plain hint with entities", "--policy budget --max-time 2m &amp;", nil, []string{"--policy", "budget", "--max-time", "2m", "&"}, ""},
		{"empty hint", "<![CDATA[]]>", nil, nil, ""},
		{"hint may not redirect the stream", "<![CDATA[--policy xen --tunnel-peer evil:7000 --insecure]]>", nil, nil,
			"WARN: migrate: ignoring FEATURES/MIGRATE_VMIGRATE_ARGS '--policy xen --tunnel-peer evil:7000 --insecure': --tunnel-peer may not be set from a VM template"},
		{"single-dash flags are flags too", "<![CDATA[-psk-file=/tmp/k]]>", nil, nil, "--psk-file may not be set from a VM template"},
		{"admin widens the template flags", "<![CDATA[--wan-rtt 40ms]]>", []string{"VMIGRATE_TEMPLATE_FLAGS=policy wan-rtt"}, []string{"--wan-rtt", "40ms"}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t)
			f.answer(t, 0, okJSON, "")
			xml := actionXML(t)
			if tc.hint != "" {
				xml = withHint(t, xml, tc.hint)
			}
			r := f.run(t, "migrate", oneArgs, xml, append([]string{"VMIGRATE_NO_TUNNEL=1"}, tc.env...)...)
			if r.code != 0 {
				t.Fatalf("exit %d\n%s", r.code, r.stderr)
			}
			if want := slices.Concat(base, tc.wantTail); !slices.Equal(r.argv, want) {
				t.Errorf("vmigrate argv\n got %q\nwant %q", r.argv, want)
			}
			if tc.wantWarn != "" && !strings.Contains(r.stderr, tc.wantWarn) {
				t.Errorf("stderr lacks %q:\n%s", tc.wantWarn, r.stderr)
			}
			if tc.wantWarn == "" && strings.Contains(r.stderr, "WARN:") {
				t.Errorf("unexpected WARN:\n%s", r.stderr)
			}
		})
	}
}

// Configuration comes from kvmrc and vmigraterc; the environment wins.
func TestConfigFiles(t *testing.T) {
	f := newFake(t)
	f.answer(t, 0, okJSON, "")
	dir := t.TempDir()
	kvmrc := filepath.Join(dir, "kvmrc")
	rc := filepath.Join(dir, "vmigraterc")
	// kvmrc may use unset variables: it is read without set -u.
	if err := os.WriteFile(kvmrc, []byte("export LIBVIRT_URI=qemu:///session\nexport QEMU_PROTOCOL=qemu+tls\nMIGRATE_OPTIONS=\"$UNSET_IN_KVMRC\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(rc, []byte("VMIGRATE_TUNNEL_PORT=7100\nVMIGRATE_SOCKET=/run/from-file.sock\nVMIGRATE_ARGS=\"--policy xen\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := f.run(t, "migrate", oneArgs, actionXML(t), "VMIGRATE_KVMRC="+kvmrc, "VMIGRATE_RC="+rc, "VMIGRATE_SOCKET=/run/from-env.sock")
	if r.code != 0 {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
	want := []string{"run", "--domain", "one-42", "--src-uri", "qemu:///session", "--dst-uri", "qemu+tls://node2.example.net/system",
		"--tunnel-peer", "node2.example.net:7100", "--psk-file", "/etc/vmigrate/key", "--migrate-socket", "/run/from-env.sock", "--json", "--policy", "xen"}
	if !slices.Equal(r.argv, want) {
		t.Errorf("vmigrate argv\n got %q\nwant %q", r.argv, want)
	}
}

// The driver's timeout arrives as SIGTERM: vmigrate must get it and the
// action must report that the VM stayed on the source.
func TestSignalReachesVmigrate(t *testing.T) {
	f := newFake(t)
	f.answer(t, 0, "", "")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := f.command(ctx, t, "migrate", oneArgs, actionXML(t), "FAKE_HANG=1")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(f.dir, "running")); err == nil {
			break
		}
		if ctx.Err() != nil {
			cmd.Process.Kill()
			t.Fatal("the fake vmigrate never started")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	r := f.finish(t, cmd, cmd.Wait(), stderr.String())
	if r.code != 3 {
		t.Errorf("exit %d, want 3", r.code)
	}
	for _, want := range []string{
		"WARN: migrate: got SIGTERM: asking vmigrate to abort the migration",
		"ERROR: migrate: migration interrupted, VM 42 (one-42) still runs on node1.example.net: interrupted",
	} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
		}
	}
}

// A VM ID that disagrees with the arguments is worth a warning, not a
// failure; without a vm_id argument the action data's is used.
func TestVMID(t *testing.T) {
	f := newFake(t)
	f.answer(t, 0, okJSON, "")
	r := f.run(t, "migrate", []string{"one-42", "node2", "node1", "43", "node1"}, actionXML(t))
	if r.code != 0 || !strings.Contains(r.stderr, "WARN: migrate: argument vm_id 43 differs from the action data's VM ID 42") {
		t.Errorf("exit %d\n%s", r.code, r.stderr)
	}
	r = f.run(t, "migrate", []string{"one-42", "node2", "node1"}, strings.ReplaceAll(actionXML(t), "\n", ""))
	if r.code != 0 || !strings.Contains(r.stderr, "INFO: migrate: VM 42 (one-42): live migration node1 -> node2") {
		t.Errorf("exit %d\n%s", r.code, r.stderr)
	}
	r = f.run(t, "migrate", []string{"one-42", "node2", "node1"}, "")
	if r.code != 0 || !strings.Contains(r.stderr, "INFO: migrate: VM ? (one-42)") {
		t.Errorf("exit %d\n%s", r.code, r.stderr)
	}
}
