// Command agent is the init process (PID 1, /init in the initramfs) of the
// vmigrate test guest: it brings up the virtio network with the address from
// the kernel command line, starts the memory workload (and the disk workload
// on /dev/vda), and serves the HTTP API of package agentapi on port 80.
//
// PID 1 must never exit (the kernel panics), so on a fatal error the agent
// prints it on the console and sleeps forever.
package main

import (
	"fmt"
	"os"
	"time"
)

func main() {
	con := &console{w: os.Stdout}
	if err := run(con); err != nil {
		con.printf("fatal: %v", err)
	}
	for { // never exit: PID 1 exiting panics the kernel
		time.Sleep(time.Hour)
	}
}

// console writes the agent's messages to the serial console.
type console struct{ w *os.File }

func (c *console) printf(format string, args ...any) {
	fmt.Fprintf(c.w, "vmigrate-agent: "+format+"\n", args...)
}
