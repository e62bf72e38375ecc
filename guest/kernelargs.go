package guest

import (
	"strconv"
	"strings"

	"github.com/vmigrate/vmigrate/guest/agentapi"
	"github.com/vmigrate/vmigrate/guest/workload"
)

// KernelArgs is the kernel command line (QEMU -append) for a guest at
// ip/prefix running workload w: serial console, warnings only, reboot at once
// on panic (with -no-reboot QEMU then exits), the vmigrate.* parameters.
func KernelArgs(ip string, prefix int, w workload.Config) string {
	args := []string{
		"console=ttyS0",
		"loglevel=4",
		"panic=-1",
		agentapi.KeyIP + "=" + ip + "/" + strconv.Itoa(prefix),
	}
	return strings.Join(append(args, w.CmdlineArgs()...), " ")
}
