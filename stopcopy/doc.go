// Package stopcopy decides when pre-copy should stop iterating and copy the
// rest with the VM paused: CloudNet's smart stop (a local minimum of the
// remaining pages over a window of passes), Xen's and QEMU's rules, and a
// budget guard over any of them. Decisions are pure functions of the pass
// history; package migrate applies them to QEMU.
//
// Until the policies land (issue "Stop-and-copy policies"), migrate lets
// QEMU decide with its own downtime limit, which is the "qemu" policy.
package stopcopy
