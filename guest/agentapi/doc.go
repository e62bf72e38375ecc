// Package agentapi is the contract between the host and the guest agent (the
// init process of the test guest): the kernel command line keys the agent
// reads, the initramfs layout the image builder writes, the JSON the agent
// serves over HTTP, and the HTTP service itself.
//
// It exists so the host side (package guest: image builder and client) and
// the guest side (guest/agent, PID 1) cannot drift apart, and so the service
// can be tested on the host without booting anything.
//
// Flow: the host boots the guest with vmigrate.ip=... and optionally a
// workload (vmigrate.workload=memdirty ...); the agent loads the virtio
// modules listed in ModuleOrderFile, configures the address, starts the
// workload, listens on :80 and prints ReadyPrefix on the console. The host then
// talks HTTP:
//
//	GET  /          static HTML page (stand-in for the study's web server)
//	GET  /ping      "pong <seq>", cheap, for a prober that polls every few ms
//	GET  /status    Status
//	POST /workload  workload.Config; replaces the running workload ("idle" stops it)
//	GET  /verify    VerifyResult (pages, and disk blocks with a disk working set);
//	                409 while no memdirty workload is populated
package agentapi
