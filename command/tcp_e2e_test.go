package command

import (
	"encoding/json"
	"fmt"
	"net"
	"testing"

	"github.com/vmigrate/vmigrate/lab/labtest"
	"github.com/vmigrate/vmigrate/migrate"
)

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// emptyVM starts a guestless QEMU whose QMP listens on TCP, as a remote
// host's would.
func emptyVM(t *testing.T, incoming bool) string {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	var extra []string
	if incoming {
		extra = []string{"-incoming", "defer"}
	}
	plainQEMU(t, "tcp", addr, extra...)
	return "tcp:" + addr
}

// QMP over TCP, and a destination told to listen on port 0: vmigrate
// reads back the port QEMU chose and points the source at it.
func TestRunOverTCP(t *testing.T) {
	labtest.Image(t) // the same prerequisites as the lab tests
	src, dst := emptyVM(t, false), emptyVM(t, true)
	code, stdout, stderr := vmigrate(t, "run", "--src-qmp", src, "--dst-qmp", dst, "--json", "--allow-unsafe-tcg")
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var res migrate.Result
	if err := json.Unmarshal([]byte(stdout), &res); err != nil {
		t.Fatal(err)
	}
	if res.Status != migrate.StatusCompleted || res.DestStatus != "running" || res.SourceStatus != "postmigrate" {
		t.Fatalf("result %+v", res)
	}
	if res.StreamBytesSource != "qemu" || res.StreamBytes <= 0 {
		t.Errorf("stream bytes %d from %s: without a relay QEMU's own count stands", res.StreamBytes, res.StreamBytesSource)
	}
}
